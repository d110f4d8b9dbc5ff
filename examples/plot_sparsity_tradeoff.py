"""
============================================
Reconstruction quality against code sparsity
============================================

How much of the data can a code with a given number of nonzeros explain, and
how long does it take to compute that code? This example compares three ways
to represent each 8x8 digit with ``n`` numbers or fewer:

* :class:`~sklearn_ksparse.KSparseAutoencoder` trained with ``k = n`` on 128
  units, encoding with its encoder (one matrix product and a top-k selection)
  or refitting the kept values by least squares
  (``transform_algorithm="least_squares"``);
* :class:`~sklearn.decomposition.PCA` keeping ``n`` components, a dense code
  of length ``n``;
* :class:`~sklearn.decomposition.MiniBatchDictionaryLearning` with 128 atoms,
  encoding each sample by orthogonal matching pursuit (OMP) with ``n``
  nonzero coefficients.

The quality measure is the explained variance on held-out digits,
``1 - ||X - X_hat||^2 / ||X - mean(X)||^2``, which is what
:meth:`KSparseAutoencoder.score <sklearn_ksparse.KSparseAutoencoder.score>`
returns.
"""

# %%
# Data and a common score
# -----------------------
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA, MiniBatchDictionaryLearning
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from sklearn_ksparse import KSparseAutoencoder

X, _ = load_digits(return_X_y=True)
X = X / 16.0
X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)
n_nonzeros = [2, 4, 8, 16, 32]


def explained_variance(X, X_hat):
    """Return the fraction of the variance of X that X_hat reproduces."""
    return 1.0 - np.sum((X - X_hat) ** 2) / np.sum((X - X.mean(axis=0)) ** 2)


def timed(function, *args, repeats=3):
    """Return the result of ``function(*args)`` and its fastest run time in s."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return result, min(times)


# %%
# Fit the models
# --------------
#
# The autoencoder is trained once per ``k`` (60 epochs, which stops before the
# loss has fully converged, hence the warning filter). PCA is fitted once per
# number of components. The dictionary is learned once on centred digits,
# because the dictionary model has no intercept; only the OMP sparsity
# ``transform_n_nonzero_coefs`` changes with ``n``.
train_mean = X_train.mean(axis=0)
dictionary = MiniBatchDictionaryLearning(
    n_components=128,
    alpha=1.0,
    batch_size=256,
    max_iter=20,
    transform_algorithm="omp",
    random_state=0,
).fit(X_train - train_mean)

results = {
    name: {"score": [], "seconds": []}
    for name in [
        "KSparseAutoencoder, encoder",
        "KSparseAutoencoder, least squares",
        "PCA",
        "dictionary learning + OMP",
    ]
}


def record(name, score, seconds):
    results[name]["score"].append(score)
    results[name]["seconds"].append(seconds)


for n in n_nonzeros:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        autoencoder = KSparseAutoencoder(
            n_components=128, k=n, max_iter=60, random_state=0
        ).fit(X_train)
    for algorithm, name in [
        ("encoder", "KSparseAutoencoder, encoder"),
        ("least_squares", "KSparseAutoencoder, least squares"),
    ]:
        autoencoder.set_params(transform_algorithm=algorithm)
        codes, seconds = timed(autoencoder.transform, X_test)
        reconstruction = autoencoder.inverse_transform(codes)
        record(name, explained_variance(X_test, reconstruction), seconds)

    pca = PCA(n_components=n, random_state=0).fit(X_train)
    codes, seconds = timed(pca.transform, X_test)
    record("PCA", explained_variance(X_test, pca.inverse_transform(codes)), seconds)

    dictionary.set_params(transform_n_nonzero_coefs=n)
    codes, seconds = timed(dictionary.transform, X_test - train_mean)
    reconstruction = codes @ dictionary.components_ + train_mean
    record(
        "dictionary learning + OMP",
        explained_variance(X_test, reconstruction),
        seconds,
    )

for name, columns in results.items():
    scores = ", ".join(f"{score:.3f}" for score in columns["score"])
    print(f"{name}: explained variance {scores}")

# %%
# Plot quality and encoding time
# ------------------------------
#
# The times are for encoding the 450 test digits, fastest of three runs, on
# whatever machine runs this example; only their ratios are meaningful.
styles = {
    "KSparseAutoencoder, encoder": {"marker": "o"},
    "KSparseAutoencoder, least squares": {"marker": "o", "linestyle": "--"},
    "PCA": {"marker": "s"},
    "dictionary learning + OMP": {"marker": "^"},
}
fig, (score_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
for name, columns in results.items():
    score_ax.plot(n_nonzeros, columns["score"], label=name, **styles[name])
    milliseconds = 1000 * np.asarray(columns["seconds"])
    time_ax.plot(n_nonzeros, milliseconds, label=name, **styles[name])
for ax in (score_ax, time_ax):
    ax.set_xscale("log", base=2)
    ax.set_xticks(n_nonzeros, [str(n) for n in n_nonzeros])
    ax.set_xlabel("nonzeros per code")
score_ax.set_ylabel("explained variance (held-out digits)")
score_ax.set_title("Reconstruction quality")
score_ax.legend(loc="lower right")
time_ax.set_yscale("log")
time_ax.set_ylabel("time to encode 450 digits (ms)")
time_ax.set_title("Encoding time")

# %%
# PCA is the best linear code of a given length, so it wins once ``n`` is a
# large part of the 64 pixels. With very few numbers per digit it explains
# much less than the sparse codes, because they can choose different units for
# different digits. OMP on a learned dictionary gives the best reconstruction
# at every sparsity, but it runs a greedy solver for every sample. That makes
# it tens to hundreds of times slower to encode than the autoencoder, whose
# encoder costs one matrix product and a top-k selection. Refitting the autoencoder's
# kept values by least squares closes part of the gap to OMP, for a fraction
# of OMP's encoding time.
plt.show()
