"""Property-based tests of the transform contract over shapes, dtypes and formats."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sklearn_ksparse import KSparseAutoencoder

# Every example fits a small model, so keep the example count modest.
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CONTAINERS = [
    "dense",
    "dense-fortran",
    "csr_matrix",
    "csc_matrix",
    "coo_matrix",
    "csr_array",
    "lil_array",
    "dok_array",
]


@st.composite
def problems(draw):
    """Draw a training set, its container and the model parameters."""
    n_components = draw(st.integers(1, 20))
    return {
        "n_samples": draw(st.integers(1, 25)),
        "n_features": draw(st.integers(1, 10)),
        "n_components": n_components,
        "k": draw(st.integers(1, n_components)),
        "transform_k": draw(st.none() | st.integers(1, n_components + 3)),
        "activation": draw(st.sampled_from(["relu", "identity"])),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
        "container": draw(st.sampled_from(CONTAINERS)),
        "scale": draw(st.sampled_from([1e-6, 1e-3, 1.0, 1e3, 1e6])),
        "offset": draw(st.sampled_from([0.0, 1.0, 100.0])),
        "density": draw(st.sampled_from([0.0, 0.3, 1.0])),
        "seed": draw(st.integers(0, 2**16)),
    }


def dense_data(problem):
    rng = np.random.RandomState(problem["seed"])
    shape = (problem["n_samples"], problem["n_features"])
    values = rng.standard_normal(shape) * problem["scale"] + problem["offset"]
    values[rng.rand(*shape) >= problem["density"]] = 0.0
    return values.astype(problem["dtype"])


def in_container(X, container):
    if container == "dense":
        return X
    if container == "dense-fortran":
        return np.asfortranarray(X)
    fmt, kind = container.split("_")
    return getattr(sp, f"{fmt}_{kind}")(X)


def fit_model(problem, X, **params):
    model = KSparseAutoencoder(
        n_components=problem["n_components"],
        k=problem["k"],
        transform_k=problem["transform_k"],
        activation=problem["activation"],
        max_iter=2,
        random_state=0,
        **params,
    )
    with warnings.catch_warnings():
        # transform_k above n_components warns, and two epochs never converge.
        warnings.simplefilter("ignore")
        return model.fit(X)


def max_nonzeros(problem):
    transform_k = problem["transform_k"] or problem["k"]
    return min(transform_k, problem["n_components"])


def assert_canonical_csr(codes):
    assert codes.format == "csr"
    assert codes.has_canonical_format
    for row in range(codes.shape[0]):
        columns = codes.indices[codes.indptr[row] : codes.indptr[row + 1]]
        assert (np.diff(columns) > 0).all()
    assert (codes.data != 0).all()


@PROPERTY_SETTINGS
@given(problem=problems(), algorithm=st.sampled_from(["encoder", "least_squares"]))
def test_transform_output_contract(problem, algorithm):
    X = in_container(dense_data(problem), problem["container"])
    model = fit_model(problem, X, transform_algorithm=algorithm)
    codes = model.transform(X)

    assert sp.issparse(codes)
    assert codes.shape == (problem["n_samples"], problem["n_components"])
    assert codes.dtype == problem["dtype"]
    assert codes.getnnz(axis=1).max() <= max_nonzeros(problem)
    assert np.isfinite(codes.data).all()
    assert_canonical_csr(codes)

    dense_codes = model.set_params(sparse_output=False).transform(X)
    assert isinstance(dense_codes, np.ndarray)
    assert dense_codes.dtype == problem["dtype"]
    np.testing.assert_array_equal(dense_codes, codes.toarray())


@PROPERTY_SETTINGS
@given(problem=problems())
def test_fitted_weights_finite_and_typed(problem):
    X = in_container(dense_data(problem), problem["container"])
    model = fit_model(problem, X)
    weights = [
        model.components_,
        model.encoder_weights_,
        model.encoder_bias_,
        model.pre_bias_,
    ]
    for array in weights:
        assert array.dtype == problem["dtype"]
        assert np.isfinite(array).all()
    assert np.isfinite(model.loss_curve_).all()
    assert model.components_.shape == (problem["n_components"], problem["n_features"])


@PROPERTY_SETTINGS
@given(problem=problems())
def test_inverse_transform_contract(problem):
    X = in_container(dense_data(problem), problem["container"])
    model = fit_model(problem, X)
    reconstruction = model.inverse_transform(model.transform(X))
    assert reconstruction.shape == (problem["n_samples"], problem["n_features"])
    assert reconstruction.dtype == problem["dtype"]
    assert np.isfinite(reconstruction).all()
    assert np.isfinite(model.score(X))


@PROPERTY_SETTINGS
@given(problem=problems())
def test_container_does_not_change_codes(problem):
    # Every container is densified row block by row block into the same
    # C-ordered array, so the codes match bit for bit.
    X_dense = dense_data(problem)
    model = fit_model(problem, X_dense)
    expected = model.transform(X_dense)
    codes = model.transform(in_container(X_dense, problem["container"]))
    np.testing.assert_array_equal(codes.indptr, expected.indptr)
    np.testing.assert_array_equal(codes.indices, expected.indices)
    np.testing.assert_array_equal(codes.data, expected.data)


def pre_activation_bound(model, X):
    """Bound the magnitude of every encoder pre-activation of the rows of X."""
    weights = model.encoder_weights_.astype(np.float64)
    centred_max = np.abs(X).max() + np.abs(model.pre_bias_).max()
    bias_max = np.abs(model.encoder_bias_).max()
    return centred_max * np.abs(weights).sum(axis=1).max() + bias_max


@PROPERTY_SETTINGS
@given(problem=problems())
def test_row_by_row_matches_batch(problem):
    """Encoding rows one at a time matches encoding them together, to rounding.

    The match is not exact. With NumPy 2.4 and its bundled OpenBLAS 0.3.31
    (SkylakeX kernels), a one-row product equals the matrix-vector product bit
    for bit but differs from the same row of a matrix-matrix product, which
    sums in another order. On unit-scale data the codes differed by up to
    1.3e-15 (float64) or 6e-7 (float32). The bound below allows
    ``8 * (n_features + 1)`` rounding errors of the largest pre-activation.
    """
    X = dense_data(problem)
    model = fit_model(problem, X)
    batch = model.transform(X).toarray()
    rows = np.vstack(
        [model.transform(X[i : i + 1]).toarray() for i in range(X.shape[0])]
    )
    eps = np.finfo(problem["dtype"]).eps
    tolerance = 8 * (problem["n_features"] + 1) * eps * pre_activation_bound(model, X)
    assert rows.dtype == batch.dtype
    assert np.abs(rows.astype(np.float64) - batch).max() <= tolerance


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_by_row_close_on_unit_data(dtype):
    # Unit-scale rows select the same units one at a time as in one batch, and
    # their values agree to a few rounding errors.
    rng = np.random.RandomState(0)
    X = rng.rand(100, 64).astype(dtype)
    model = KSparseAutoencoder(n_components=128, k=4, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X)
    batch = model.transform(X).toarray()
    rows = np.vstack([model.transform(X[i : i + 1]).toarray() for i in range(100)])
    np.testing.assert_array_equal(rows != 0, batch != 0)
    np.testing.assert_allclose(rows, batch, rtol=64 * np.finfo(dtype).eps)
