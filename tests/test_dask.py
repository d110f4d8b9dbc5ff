"""KSparseAutoencoder with Dask: dask-ml wrappers and joblib's Dask backend.

The tests run on a two-process LocalCluster bound to 127.0.0.1.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV

from sklearn_ksparse import KSparseAutoencoder

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
wrappers = pytest.importorskip("dask_ml.wrappers")
joblib = pytest.importorskip("joblib")

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        host="127.0.0.1",
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def digits():
    X = load_digits().data / 16.0
    return X[np.random.RandomState(0).permutation(X.shape[0])][:1200]


def small_model(**params):
    return KSparseAutoencoder(32, k=4, random_state=0, **params)


def test_incremental_fits_over_blocks(client, digits):
    X = da.from_array(digits, chunks=(300, 64))
    incremental = wrappers.Incremental(small_model(), shuffle_blocks=False)
    incremental.fit(X)

    fitted = incremental.estimator_
    # One partial_fit call per block, in block order.
    assert fitted.n_iter_ == 4
    assert len(fitted.loss_curve_) == 4
    expected = small_model()
    for start in range(0, 1200, 300):
        expected.partial_fit(digits[start : start + 300])
    np.testing.assert_allclose(fitted.components_, expected.components_)


def test_incremental_calls_partial_fit_once_for_numpy(client, digits):
    incremental = wrappers.Incremental(small_model())
    incremental.fit(digits)
    assert incremental.estimator_.n_iter_ == 1


def test_incremental_transform_gives_sparse_blocks(client, digits):
    X = da.from_array(digits, chunks=(300, 64))
    incremental = wrappers.Incremental(small_model()).fit(X)

    codes = incremental.transform(X)
    assert isinstance(codes, da.Array)
    # NOTE: dask-ml 2025.1.0 maps the blocks without output chunks, so the lazy
    # array reports the input's 64 columns; the computed blocks have 32.
    assert codes.shape[0] == 1200
    # dask-ml infers the block type by transforming one all-zero row.
    assert isinstance(codes._meta, sp.csr_matrix)

    result = codes.compute()
    assert isinstance(result, sp.csr_matrix)
    assert result.shape == (1200, 32)
    expected = incremental.estimator_.transform(digits)
    np.testing.assert_allclose(result.toarray(), expected.toarray())
    assert result.getnnz(axis=1).max() <= 4


def test_parallel_post_fit_transform(client, digits):
    model = small_model(max_iter=3).fit(digits)
    X = da.from_array(digits, chunks=(200, 64))
    codes = wrappers.ParallelPostFit(model).transform(X)
    assert codes.numblocks == (6, 1)

    with distributed.get_task_stream(client) as task_stream:
        result = client.compute(codes).result()
    # One task per block ran on the workers.
    assert len(task_stream.data) >= 6
    assert isinstance(result, sp.csr_matrix)
    assert result.shape == (1200, 32)
    np.testing.assert_allclose(result.toarray(), model.transform(digits).toarray())


def test_grid_search_with_dask_backend(client, digits):
    def search(n_jobs):
        model = KSparseAutoencoder(32, max_iter=3, random_state=0)
        search = GridSearchCV(model, {"k": [2, 4, 8]}, cv=3, n_jobs=n_jobs)
        return search.fit(digits[:600])

    local = search(n_jobs=None)
    with distributed.get_task_stream(client) as task_stream:
        with joblib.parallel_config(backend="dask"):
            on_cluster = search(n_jobs=-1)

    # joblib may batch several of the 9 fits into one task, so only check that
    # the work ran on the workers.
    assert len(task_stream.data) >= 1
    assert on_cluster.best_params_ == local.best_params_
    np.testing.assert_allclose(
        on_cluster.cv_results_["mean_test_score"],
        local.cv_results_["mean_test_score"],
    )
    # Larger k reconstructs better, so the search picks the largest.
    assert local.best_params_ == {"k": 8}
