"""The default job: fit on scikit-learn's bundled digits and report the results."""

import time
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from ._ksparse import KSparseAutoencoder


def run_digits_demo(n_components=256, k=16, transform_k=48, random_state=0):
    """Fit on the digits, print the report, and return its figures as a dict.

    The report states whether training stopped at ``max_iter``, so the
    ConvergenceWarning of each fit is not repeated on stderr.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _run_digits_demo(n_components, k, transform_k, random_state)


def _run_digits_demo(n_components, k, transform_k, random_state):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=random_state, stratify=y
    )
    scaler = MinMaxScaler().fit(X_train)
    model = KSparseAutoencoder(
        n_components, k=k, transform_k=transform_k, random_state=random_state
    )
    start = time.perf_counter()
    model.fit(scaler.transform(X_train))
    fit_seconds = time.perf_counter() - start

    codes = model.transform(scaler.transform(X_test))
    nonzeros = codes.getnnz(axis=1)
    report = {
        "fit_seconds": fit_seconds,
        "n_epochs": model.n_iter_,
        "max_iter": model.max_iter,
        "explained_variance": model.score(scaler.transform(X_test)),
        "codes_shape": codes.shape,
        "nonzeros_mean": float(nonzeros.mean()),
        "nonzeros_max": int(nonzeros.max()),
        "dead_components": model.n_dead_components_,
    }
    report.update(_compare_classifiers(scaler, model, X_train, X_test, y_train, y_test))
    _print_report(report, n_components, k, transform_k)
    return report


def _compare_classifiers(scaler, model, X_train, X_test, y_train, y_test):
    """Score logistic regression on raw pixels and on the fitted model's codes.

    The scaler and the autoencoder are already fitted on ``X_train``, so only
    the classifier is trained on the codes instead of refitting the pipeline.
    """
    raw = make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=2000))
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(model.transform(scaler.transform(X_train)), y_train)
    coded = make_pipeline(scaler, model, classifier)
    return {
        "accuracy_raw": raw.fit(X_train, y_train).score(X_test, y_test),
        "accuracy_codes": coded.score(X_test, y_test),
    }


def _print_report(report, n_components, k, transform_k):
    stopped = ""
    if report["n_epochs"] == report["max_iter"]:
        stopped = ", stopped at max_iter before the loss converged"
    rows, columns = report["codes_shape"]
    print(
        f"KSparseAutoencoder(n_components={n_components}, k={k}, "
        f"transform_k={transform_k}) on scikit-learn's digits "
        "(1437 training rows, 360 held out)"
    )
    print(
        f"  fit time                          {report['fit_seconds']:.2f} s "
        f"({report['n_epochs']} epochs{stopped})"
    )
    print(f"  explained variance (held out)     {report['explained_variance']:.3f}")
    print(f"  codes                             {rows} x {columns} CSR")
    print(
        f"  nonzeros per row                  mean {report['nonzeros_mean']:.1f}, "
        f"max {report['nonzeros_max']}"
    )
    print(f"  dead components                   {report['dead_components']}")
    print(
        "  held-out accuracy, LogisticRegression on codes   "
        f"{report['accuracy_codes']:.3f}"
    )
    print(
        "  held-out accuracy, LogisticRegression on pixels  "
        f"{report['accuracy_raw']:.3f}"
    )
