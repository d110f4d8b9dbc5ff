"""End-to-end behaviour of KSparseAutoencoder on the digits dataset."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline

from sklearn_ksparse import KSparseAutoencoder

# Most models here train for a few epochs only, which is enough for the
# behaviour under test but too short to converge.
pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)

N_COMPONENTS = 64
K = 6


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.fixture(scope="module")
def fitted(digits):
    X, _ = digits
    model = KSparseAutoencoder(
        n_components=N_COMPONENTS, k=K, max_iter=5, random_state=0
    )
    return model.fit(X)


def small_model(**params):
    settings = {
        "n_components": N_COMPONENTS,
        "k": K,
        "max_iter": 3,
        "random_state": 0,
    }
    settings.update(params)
    return KSparseAutoencoder(**settings)


def assert_same_csr(left, right):
    assert_array_equal(left.indptr, right.indptr)
    assert_array_equal(left.indices, right.indices)
    assert_array_equal(left.data, right.data)


@pytest.mark.parametrize("transform_k", [None, 3, 20])
def test_transform_returns_canonical_csr(fitted, digits, transform_k):
    X, _ = digits
    model = copy.deepcopy(fitted).set_params(transform_k=transform_k)
    codes = model.transform(X)
    max_nonzeros = K if transform_k is None else transform_k

    assert sp.issparse(codes)
    assert codes.format == "csr"
    assert codes.shape == (X.shape[0], N_COMPONENTS)
    assert codes.getnnz(axis=1).max() <= max_nonzeros
    assert codes.has_canonical_format
    assert np.all(codes.data != 0)
    # The estimator sets these flags itself, so check the arrays as well.
    codes.check_format(full_check=True)
    resorted = codes.copy()
    resorted.has_sorted_indices = False
    resorted.sort_indices()
    assert_array_equal(resorted.indices, codes.indices)
    for row in range(0, X.shape[0], 97):
        row_indices = codes.indices[codes.indptr[row] : codes.indptr[row + 1]]
        assert np.all(np.diff(row_indices) > 0)


def test_identity_activation_keeps_exactly_k(digits):
    X, _ = digits
    model = small_model(activation="identity", transform_k=9).fit(X)
    nonzeros = model.transform(X).getnnz(axis=1)

    assert nonzeros.min() == 9
    assert nonzeros.max() == 9


def test_relu_codes_are_nonnegative(fitted, digits):
    X, _ = digits
    codes = fitted.transform(X)

    assert codes.data.min() > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(digits, dtype):
    X, _ = digits
    X = X.astype(dtype)
    model = small_model().fit(X)
    codes = model.transform(X)

    assert model.components_.dtype == dtype
    assert model.encoder_weights_.dtype == dtype
    assert model.encoder_bias_.dtype == dtype
    assert model.pre_bias_.dtype == dtype
    assert codes.dtype == dtype
    assert model.inverse_transform(codes).dtype == dtype


def test_float32_model_transforms_float64_input(digits):
    X, _ = digits
    model = small_model().fit(X.astype(np.float32))
    codes = model.transform(X)

    assert codes.dtype == np.float64
    assert model.components_.dtype == np.float32


def test_fit_transform_equals_fit_then_transform(digits):
    X, _ = digits
    codes_at_once = small_model().fit_transform(X)
    codes_in_steps = small_model().fit(X).transform(X)

    assert_same_csr(codes_at_once, codes_in_steps)


def test_inverse_transform_sparse_and_dense_agree(fitted, digits):
    X, _ = digits
    codes = fitted.transform(X)
    from_sparse = fitted.inverse_transform(codes)
    from_dense = fitted.inverse_transform(codes.toarray())
    by_hand = codes.toarray() @ fitted.components_ + fitted.pre_bias_

    assert isinstance(from_sparse, np.ndarray)
    assert from_sparse.shape == X.shape
    assert_allclose(from_sparse, from_dense, rtol=1e-12, atol=1e-12)
    assert_allclose(from_sparse, by_hand, rtol=1e-12, atol=1e-12)


def test_score_is_explained_variance(fitted, digits):
    X, _ = digits
    reconstruction = fitted.inverse_transform(fitted.transform(X))
    residual = np.sum((X - reconstruction) ** 2)
    total = np.sum((X - X.mean(axis=0)) ** 2)
    expected = 1.0 - residual / total

    assert fitted.score(X) == pytest.approx(expected, rel=1e-10)
    assert 0.0 < fitted.score(X) < 1.0


def test_score_improves_with_training(digits):
    X, _ = digits
    short = small_model(max_iter=1).fit(X)
    longer = small_model(max_iter=10).fit(X)

    assert longer.score(X) > short.score(X)


def test_codes_help_logistic_regression(digits):
    X, y = digits
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=1
    )
    raw = LogisticRegression(max_iter=5000).fit(X_train, y_train)
    encoder = KSparseAutoencoder(
        n_components=256,
        k=16,
        transform_k=48,
        learning_rate_init=3e-3,
        max_iter=20,
        random_state=0,
    )
    pipeline = make_pipeline(encoder, LogisticRegression(max_iter=5000))
    pipeline.fit(X_train, y_train)

    # NOTE: the gain is small. This split scores 0.973 against 0.967 (6 of
    # 899 test digits), and two other splits gained 0.1 to 0.2 points.
    assert pipeline.score(X_test, y_test) > raw.score(X_test, y_test)


def test_grid_search_in_pipeline_picks_k(digits):
    X, y = digits
    pipeline = make_pipeline(small_model(), LogisticRegression(max_iter=1000))
    search = GridSearchCV(pipeline, {"ksparseautoencoder__k": [2, 8]}, cv=2)
    search.fit(X, y)

    assert search.best_params_["ksparseautoencoder__k"] in (2, 8)
    assert search.best_estimator_[0].k == search.best_params_["ksparseautoencoder__k"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_unsupervised_grid_search_prefers_larger_k(digits):
    X, _ = digits
    search = GridSearchCV(small_model(), {"k": [2, 16]}, cv=2, refit=False)
    search.fit(X)
    scores = search.cv_results_["mean_test_score"]

    assert search.best_params_ == {"k": 16}
    assert scores[1] > scores[0]


def test_same_random_state_gives_same_model(digits):
    X, _ = digits
    first = small_model(random_state=7).fit(X)
    second = small_model(random_state=7).fit(X)

    assert_array_equal(first.components_, second.components_)
    assert_array_equal(first.encoder_weights_, second.encoder_weights_)
    assert_array_equal(first.encoder_bias_, second.encoder_bias_)
    assert_array_equal(first.pre_bias_, second.pre_bias_)
    assert_same_csr(first.transform(X), second.transform(X))


def test_other_random_state_gives_other_model(digits):
    X, _ = digits
    first = small_model(random_state=7).fit(X)
    second = small_model(random_state=8).fit(X)

    assert not np.array_equal(first.components_, second.components_)


def test_k_above_n_components_is_clamped(digits):
    X, _ = digits
    model = KSparseAutoencoder(n_components=8, k=12, max_iter=2, random_state=0)
    with pytest.warns(
        UserWarning, match="k=12 is larger than n_components=8"
    ) as record:
        model.fit(X)
    codes = model.transform(X)
    messages = [str(warning.message) for warning in record]

    assert codes.getnnz(axis=1).max() <= 8
    assert any("using k=8" in message for message in messages)
    assert all(warning.filename == __file__ for warning in record)


def test_transform_k_above_n_components_is_clamped(digits):
    X, _ = digits
    model = KSparseAutoencoder(
        n_components=8, k=2, transform_k=20, max_iter=2, random_state=0
    )
    with pytest.warns(UserWarning, match="transform_k=20 is larger") as record:
        model.fit(X)
    with warnings.catch_warnings():
        # transform reuses the clamped value without warning again
        warnings.simplefilter("error", UserWarning)
        codes = model.transform(X)

    assert codes.getnnz(axis=1).max() <= 8
    assert all(warning.filename == __file__ for warning in record)


def test_get_feature_names_out(fitted):
    names = fitted.get_feature_names_out()
    expected = [f"ksparseautoencoder{i}" for i in range(N_COMPONENTS)]

    assert names.dtype == object
    assert_array_equal(names, expected)


def test_clone_is_unfitted_with_same_params(fitted, digits):
    X, _ = digits
    cloned = clone(fitted)

    assert cloned.get_params() == fitted.get_params()
    assert not hasattr(cloned, "components_")
    with pytest.raises(NotFittedError):
        cloned.transform(X)
    cloned.fit(X)
    assert_array_equal(cloned.components_, fitted.components_)


def test_dense_output_equals_sparse_output(digits):
    X, _ = digits
    sparse_model = small_model().fit(X)
    dense_model = small_model(sparse_output=False).fit(X)
    dense_codes = dense_model.transform(X)

    assert isinstance(dense_codes, np.ndarray)
    assert dense_codes.dtype == X.dtype
    assert_array_equal(dense_codes, sparse_model.transform(X).toarray())
    assert_array_equal(dense_model.fit_transform(X), dense_codes)


def test_pandas_output_with_dense_codes(digits):
    X, _ = digits
    frame = pd.DataFrame(X, index=np.arange(X.shape[0]) + 1000)
    model = small_model(sparse_output=False).set_output(transform="pandas")
    codes = model.fit_transform(frame)

    assert isinstance(codes, pd.DataFrame)
    assert list(codes.columns) == list(model.get_feature_names_out())
    assert_array_equal(codes.index, frame.index)
    model.set_output(transform="default")
    assert_array_equal(codes.to_numpy(), model.transform(X))


def test_pandas_output_rejects_sparse_codes(digits):
    X, _ = digits
    model = small_model().set_output(transform="pandas")

    with pytest.raises(ValueError, match="Set sparse_output=False to get pandas"):
        model.fit_transform(pd.DataFrame(X))
    # The container is checked before training, so the model stays unfitted.
    assert not hasattr(model, "components_")
