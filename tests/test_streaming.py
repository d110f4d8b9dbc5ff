"""Out-of-core training: partial_fit over chunks of a memory-mapped array or a CSV."""

import tracemalloc
from itertools import islice

import numpy as np
import pytest
from sklearn.datasets import load_digits

from sklearn_ksparse import KSparseAutoencoder
from sklearn_ksparse._io import open_table

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # The last chunk of a pass can have fewer rows than batch_size.
    pytest.mark.filterwarnings("ignore:batch_size=.* is larger:UserWarning"),
]


def shifted_digits():
    """Return the digits and their eight one-pixel shifts, shuffled, in [0, 1].

    The values are multiples of 1/16, so CSV text round-trips them exactly.
    """
    X = load_digits().data / 16.0
    images = X.reshape(-1, 8, 8)
    variants = [
        np.roll(images, (dy, dx), axis=(1, 2)).reshape(-1, 64)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    rows = np.concatenate(variants)
    return rows[np.random.RandomState(0).permutation(rows.shape[0])]


def write_memmap(path, X):
    array = np.lib.format.open_memmap(path, mode="w+", dtype=X.dtype, shape=X.shape)
    array[:] = X
    array.flush()
    del array
    return path


def write_csv(path, X):
    header = ",".join(f"pixel{j}" for j in range(X.shape[1]))
    np.savetxt(path, X, delimiter=",", fmt="%.17g", header=header, comments="")
    return path


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stream")
    X = shifted_digits()
    return X, write_memmap(directory / "X.npy", X), write_csv(directory / "X.csv", X)


def stream_epochs(model, table, chunk_rows, n_epochs):
    for _ in range(n_epochs):
        for chunk in table.iter_chunks(chunk_rows):
            model.partial_fit(chunk)
    return model


def peak_bytes_of_one_pass(model, table, chunk_rows):
    """Measure the peak of traced allocations during one pass after the first
    call, so that the one-time set-up of the model is not counted."""
    model.partial_fit(next(table.iter_chunks(chunk_rows)))
    tracemalloc.start()
    try:
        stream_epochs(model, table, chunk_rows, n_epochs=1)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", ["npy", "csv"])
def test_stream_peak_memory_bounded_by_chunk(data_files, suffix):
    X, memmap_path, csv_path = data_files
    table = open_table(memmap_path if suffix == "npy" else csv_path)
    assert table.estimated_rows() > 0
    model = KSparseAutoencoder(64, k=8, batch_size=64, random_state=0)

    peak = peak_bytes_of_one_pass(model, table, chunk_rows=256)

    # tracemalloc traces NumPy buffers and Python objects, and a reader that loaded the
    # whole table would allocate X.nbytes (8.3 MB) at once. The memory pandas'
    # CSV tokenizer allocates in C is not traced.
    assert peak < X.nbytes / 4
    assert model.n_features_in_ == 64
    assert table.n_rows == X.shape[0]


def test_memmap_stream_matches_fit_quality(tmp_path):
    X = load_digits().data / 16.0
    X = X[np.random.RandomState(0).permutation(X.shape[0])]
    table = open_table(write_memmap(tmp_path / "digits.npy", X))
    params = dict(n_components=64, k=8, random_state=0)
    n_epochs = 10

    streamed = stream_epochs(KSparseAutoencoder(**params), table, 256, n_epochs)
    fitted = KSparseAutoencoder(max_iter=n_epochs, tol=0, **params).fit(X)
    # partial_fit trains with k from the start; fit does too with initial_k=None.
    fitted_fixed_k = KSparseAutoencoder(
        max_iter=n_epochs, tol=0, initial_k=None, **params
    ).fit(X)

    # 8 chunks of at most 256 rows per epoch, one loss entry per partial_fit call.
    assert len(streamed.loss_curve_) == 8 * n_epochs
    assert fitted.n_iter_ == n_epochs
    # Explained variance measured on this data: streamed 0.623, fit with the
    # fixed k 0.608, fit with its default k schedule 0.567.
    assert streamed.score(X) > 0.55
    assert streamed.score(X) >= fitted_fixed_k.score(X) - 0.02
    assert streamed.score(X) >= fitted.score(X) - 0.02


def test_csv_stream_equals_memmap_stream(data_files):
    X, memmap_path, csv_path = data_files
    X = X[:1000]
    models = []
    for path in (memmap_path, csv_path):
        table = open_table(path)
        chunks = list(islice(table.iter_chunks(250), 4))
        model = KSparseAutoencoder(32, k=4, random_state=0)
        for _ in range(2):
            for chunk in chunks:
                model.partial_fit(chunk)
        models.append(model)

    memmap_model, csv_model = models
    np.testing.assert_allclose(csv_model.components_, memmap_model.components_)
    np.testing.assert_allclose(csv_model.pre_bias_, memmap_model.pre_bias_)
    assert csv_model.score(X) == pytest.approx(memmap_model.score(X))


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
def test_npz_stream_peak_memory_bounded(tmp_path, compressed):
    X = shifted_digits()
    save = np.savez_compressed if compressed else np.savez
    save(tmp_path / "X.npz", X=X)
    model = KSparseAutoencoder(64, k=8, batch_size=64, random_state=0)
    model.partial_fit(X[:256])

    # Opening the table is traced too, because a reader that loads the whole
    # array does so when the table is opened.
    tracemalloc.start()
    try:
        table = open_table(tmp_path / "X.npz")
        stream_epochs(model, table, chunk_rows=256, n_epochs=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Loading the archive's array whole would allocate X.nbytes (8.3 MB) at once.
    assert peak < X.nbytes / 4
    assert table.n_rows == X.shape[0]
