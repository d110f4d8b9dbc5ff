"""Input handling: accepted containers, dtypes, edge shapes and rejected inputs."""

import tracemalloc
import warnings
from fractions import Fraction
from numbers import Real

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn import config_context
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from sklearn_ksparse import KSparseAutoencoder, TrainingDivergedError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_FEATURES = 6
N_COMPONENTS = 8


def make_data(n_samples=40, n_features=N_FEATURES, seed=0):
    return np.random.RandomState(seed).rand(n_samples, n_features)


def make_model(**params):
    defaults = dict(n_components=N_COMPONENTS, k=2, max_iter=2, random_state=0)
    defaults.update(params)
    return KSparseAutoencoder(**defaults)


@pytest.fixture(scope="module")
def fitted():
    return make_model().fit(make_data())


def assert_valid_codes(codes, n_samples, n_components, max_nonzeros):
    assert sp.issparse(codes)
    assert codes.shape == (n_samples, n_components)
    assert codes.getnnz(axis=1).max(initial=0) <= max_nonzeros
    assert np.isfinite(codes.data).all()


def run_every_method(model, X, n_samples):
    """Fit, update, encode, decode and score X, checking shapes and finiteness."""
    model.fit(X)
    model.partial_fit(X)
    codes = model.transform(X)
    assert_valid_codes(codes, n_samples, model.n_components, model.k)
    reconstruction = model.inverse_transform(codes)
    assert reconstruction.shape == (n_samples, model.n_features_in_)
    assert np.isfinite(reconstruction).all()
    assert np.isfinite(model.score(X))
    return codes


# ----------------------------------------------------------------------
# Dense arrays, lists and memory orders
# ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtype_preserved(dtype):
    X = make_data().astype(dtype)
    model = make_model().fit(X)
    codes = model.transform(X)
    assert model.components_.dtype == dtype
    assert codes.dtype == dtype
    assert model.inverse_transform(codes).dtype == dtype
    assert model.set_params(sparse_output=False).transform(X).dtype == dtype


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16, bool])
def test_integer_input_trains_in_float64(dtype):
    X = (make_data() * 10).astype(dtype)
    model = make_model().fit(X)
    reference = make_model().fit(X.astype(np.float64))
    assert model.components_.dtype == np.float64
    np.testing.assert_array_equal(model.components_, reference.components_)
    codes = model.transform(X)
    assert codes.dtype == np.float64
    np.testing.assert_array_equal(
        codes.toarray(), reference.transform(X.astype(np.float64)).toarray()
    )


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.astype(np.float16),
        lambda X: X.astype(np.longdouble),
        lambda X: X.astype(object),
        lambda X: pd.DataFrame(np.round(X * 10)).astype("Int64"),
    ],
    ids=["float16", "longdouble", "object", "nullable-int"],
)
def test_other_numeric_input_trains_in_float64(convert):
    X = convert(make_data())
    model = make_model().fit(X)
    assert model.components_.dtype == np.float64
    assert model.transform(X).dtype == np.float64


def test_list_input_matches_array():
    X = make_data()
    from_list = make_model().fit(X.tolist())
    from_array = make_model().fit(X)
    np.testing.assert_array_equal(from_list.components_, from_array.components_)
    np.testing.assert_array_equal(
        from_list.transform(X.tolist()).toarray(), from_array.transform(X).toarray()
    )
    from_list.partial_fit(X.tolist())
    assert from_list.n_iter_ == from_array.n_iter_ + 1


def test_fortran_order_matches_c_order():
    X = make_data()
    X_fortran = np.asfortranarray(X)
    assert not X_fortran.flags.c_contiguous
    c_model = make_model().fit(X)
    f_model = make_model().fit(X_fortran)
    # The column means behind pre_bias_ sum in a different order, so the
    # weights may differ in the last bit.
    np.testing.assert_allclose(c_model.components_, f_model.components_, rtol=1e-9)
    np.testing.assert_array_equal(
        c_model.transform(X).toarray(), c_model.transform(X_fortran).toarray()
    )
    c_model.partial_fit(X)
    f_model.partial_fit(X_fortran)
    np.testing.assert_allclose(c_model.components_, f_model.components_, rtol=1e-9)


def test_non_contiguous_view_matches_copy():
    X = make_data(n_features=2 * N_FEATURES)[::2, ::2]
    assert not X.flags.c_contiguous
    model = make_model().fit(X)
    reference = make_model().fit(X.copy())
    np.testing.assert_array_equal(model.components_, reference.components_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_memmap(tmp_path, dtype):
    X = make_data().astype(dtype)
    path = tmp_path / "X.dat"
    writable = np.memmap(path, dtype=dtype, mode="w+", shape=X.shape)
    writable[:] = X
    writable.flush()
    del writable
    X_map = np.memmap(path, dtype=dtype, mode="r", shape=X.shape)
    assert not X_map.flags.writeable

    model = make_model().fit(X_map)
    reference = make_model().fit(X)
    np.testing.assert_array_equal(model.components_, reference.components_)
    model.partial_fit(X_map)
    reference.partial_fit(X)
    np.testing.assert_array_equal(model.components_, reference.components_)
    np.testing.assert_array_equal(
        model.transform(X_map).toarray(), reference.transform(X).toarray()
    )
    assert model.score(X_map) == reference.score(X)
    np.testing.assert_array_equal(np.asarray(X_map), X)


def test_input_array_not_modified():
    X = make_data()
    original = X.copy()
    model = make_model().fit(X)
    model.partial_fit(X)
    model.transform(X)
    model.score(X)
    np.testing.assert_array_equal(X, original)


# ----------------------------------------------------------------------
# pandas
# ----------------------------------------------------------------------


def make_frame(n_samples=30):
    columns = [f"pixel_{i}" for i in range(N_FEATURES)]
    return pd.DataFrame(make_data(n_samples), columns=columns)


def test_dataframe_sets_feature_names():
    df = make_frame()
    model = make_model().fit(df)
    np.testing.assert_array_equal(model.feature_names_in_, df.columns.to_numpy())
    expected = [f"ksparseautoencoder{i}" for i in range(N_COMPONENTS)]
    assert model.get_feature_names_out().tolist() == expected


def test_dataframe_partial_fit_sets_feature_names():
    df = make_frame()
    model = make_model().partial_fit(df)
    np.testing.assert_array_equal(model.feature_names_in_, df.columns.to_numpy())


def test_dataframe_codes_match_array_codes():
    df = make_frame()
    model = make_model().fit(df)
    reference = make_model().fit(df.to_numpy())
    np.testing.assert_array_equal(model.components_, reference.components_)
    np.testing.assert_array_equal(
        model.transform(df).toarray(), reference.transform(df.to_numpy()).toarray()
    )


def test_dataframe_renamed_column_raises():
    df = make_frame()
    model = make_model().fit(df)
    with pytest.raises(ValueError, match="feature names should match"):
        model.transform(df.rename(columns={"pixel_0": "pixel_x"}))


def test_dataframe_reordered_columns_raise():
    df = make_frame()
    model = make_model().fit(df)
    with pytest.raises(ValueError, match="same order"):
        model.transform(df[df.columns[::-1]])


def test_dataframe_renamed_column_partial_fit_raises():
    df = make_frame()
    model = make_model().fit(df)
    with pytest.raises(ValueError, match="feature names should match"):
        model.partial_fit(df.rename(columns={"pixel_0": "pixel_x"}))


def test_array_after_dataframe_warns():
    df = make_frame()
    model = make_model().fit(df)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        model.transform(df.to_numpy())


def test_dataframe_after_array_warns():
    df = make_frame()
    model = make_model().fit(df.to_numpy())
    with pytest.warns(UserWarning, match="fitted without feature names"):
        model.transform(df)


def test_pandas_output_dense():
    df = make_frame()
    df.index = df.index + 100
    model = make_model(sparse_output=False).fit(df)
    expected = model.transform(df)
    model.set_output(transform="pandas")
    out = model.transform(df)
    assert isinstance(out, pd.DataFrame)
    assert out.columns.tolist() == model.get_feature_names_out().tolist()
    assert out.index.tolist() == df.index.tolist()
    np.testing.assert_array_equal(out.to_numpy(), expected)


def test_inverse_transform_of_pandas_output():
    df = make_frame()
    model = make_model(sparse_output=False).fit(df)
    expected = model.inverse_transform(model.transform(df))
    codes = model.set_output(transform="pandas").transform(df)
    np.testing.assert_array_equal(model.inverse_transform(codes), expected)


def test_pandas_output_sparse_raises():
    df = make_frame()
    model = make_model().fit(df).set_output(transform="pandas")
    with pytest.raises(ValueError, match="sparse_output=True") as excinfo:
        model.transform(df)
    assert "set_output(transform='default')" in str(excinfo.value)


def test_pandas_output_fit_transform_dense():
    df = make_frame()
    model = make_model(sparse_output=False).set_output(transform="pandas")
    out = model.fit_transform(df)
    assert isinstance(out, pd.DataFrame)
    assert out.shape == (len(df), N_COMPONENTS)


# ----------------------------------------------------------------------
# Sparse input
# ----------------------------------------------------------------------

SPARSE_FORMATS = ["csr", "csc", "coo", "lil", "dok", "bsr", "dia"]


def make_sparse(fmt, container, dtype=np.float64, n_samples=40):
    X = sp.random(
        n_samples, N_FEATURES, density=0.4, format="csr", random_state=0, dtype=dtype
    )
    X = X.asformat(fmt)
    if container == "array":
        X = getattr(sp, f"{fmt}_array")(X)
    return X


@pytest.mark.parametrize("container", ["matrix", "array"])
@pytest.mark.parametrize("fmt", SPARSE_FORMATS)
def test_sparse_formats_match_dense(fmt, container):
    X_sparse = make_sparse(fmt, container)
    X_dense = X_sparse.toarray()
    model = make_model().fit(X_dense)
    np.testing.assert_array_equal(
        model.transform(X_sparse).toarray(), model.transform(X_dense).toarray()
    )
    assert model.score(X_sparse) == pytest.approx(model.score(X_dense), rel=1e-12)

    sparse_model = make_model()
    codes = run_every_method(sparse_model, X_sparse, X_dense.shape[0])
    assert codes.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_dtype_preserved(dtype):
    X = make_sparse("csr", "array", dtype=dtype)
    model = make_model().fit(X)
    assert model.components_.dtype == dtype
    assert model.transform(X).dtype == dtype


def test_sparse_integer_input_trains_in_float64():
    X = sp.csr_matrix((make_data() * 10).astype(np.int64))
    model = make_model().fit(X)
    assert model.components_.dtype == np.float64
    assert model.transform(X).dtype == np.float64


@pytest.mark.parametrize("container", ["matrix", "array"])
def test_sparse_64bit_indices(container):
    X = make_sparse("csr", container)
    X_wide = X.copy()
    X_wide.indices = X_wide.indices.astype(np.int64)
    X_wide.indptr = X_wide.indptr.astype(np.int64)
    assert X_wide.indices.dtype == np.int64

    model = make_model().fit(X_wide)
    reference = make_model().fit(X)
    np.testing.assert_array_equal(model.components_, reference.components_)
    model.partial_fit(X_wide)
    reference.partial_fit(X)
    np.testing.assert_array_equal(model.components_, reference.components_)
    np.testing.assert_array_equal(
        model.transform(X_wide).toarray(), reference.transform(X).toarray()
    )


def test_sparse_non_canonical_csr():
    # Two stored entries in row 0, column 1 sum to 0.5.
    data = np.array([0.2, 0.3, 0.4, 0.7])
    indices = np.array([1, 1, 0, 3])
    indptr = np.array([0, 3, 4])
    X = sp.csr_matrix((data, indices, indptr), shape=(2, 4))
    assert not X.has_canonical_format
    model = make_model(n_components=4).fit(make_data(n_features=4))
    np.testing.assert_array_equal(
        model.transform(X).toarray(), model.transform(X.toarray()).toarray()
    )


def test_sparse_input_not_modified():
    X = make_sparse("csr", "matrix")
    original = X.copy()
    model = make_model().fit(X)
    model.partial_fit(X)
    model.transform(X)
    assert (X != original).nnz == 0
    np.testing.assert_array_equal(X.indices, original.indices)


def peak_traced_bytes(function):
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def large_sparse():
    # 6000 x 1500 with 0.2% nonzeros: 69 MiB dense, 0.2 MiB as CSR.
    return sp.random(
        6000, 1500, density=0.002, format="csr", random_state=0, dtype=np.float64
    )


def dense_bytes(X):
    return X.shape[0] * X.shape[1] * X.dtype.itemsize


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_fit_memory_below_dense_size(large_sparse, fmt):
    X = large_sparse.asformat(fmt)
    model = make_model(n_components=16, max_iter=1, batch_size=32)
    peak = peak_traced_bytes(lambda: model.fit(X))
    assert peak < dense_bytes(X) / 4


def test_sparse_partial_fit_memory_below_dense_size(large_sparse):
    model = make_model(n_components=16, max_iter=1, batch_size=32)
    model.partial_fit(large_sparse[:64])
    peak = peak_traced_bytes(lambda: model.partial_fit(large_sparse))
    assert peak < dense_bytes(large_sparse) / 4


def test_sparse_transform_memory_below_dense_size(large_sparse):
    model = make_model(n_components=16, max_iter=1, batch_size=32)
    model.partial_fit(large_sparse[:64])
    peak = peak_traced_bytes(lambda: model.transform(large_sparse))
    assert peak < dense_bytes(large_sparse) / 4


def test_sparse_transform_memory_follows_working_memory(large_sparse):
    model = make_model(n_components=16, max_iter=1, batch_size=32)
    model.partial_fit(large_sparse[:64])
    with config_context(working_memory=4):
        peak = peak_traced_bytes(lambda: model.transform(large_sparse))
    assert peak < dense_bytes(large_sparse) / 4


# ----------------------------------------------------------------------
# Edge shapes and values
# ----------------------------------------------------------------------


def test_one_sample():
    X = make_data(n_samples=1)
    model = make_model()
    codes = run_every_method(model, X, 1)
    assert codes.shape == (1, N_COMPONENTS)


def test_one_feature():
    X = make_data(n_features=1)
    codes = run_every_method(make_model(), X, X.shape[0])
    assert codes.nnz > 0


def test_one_sample_one_feature():
    X = make_data(n_samples=1, n_features=1)
    run_every_method(make_model(), X, 1)


def test_one_component():
    X = make_data()
    model = make_model(n_components=1, k=1)
    codes = run_every_method(model, X, X.shape[0])
    assert model.components_.shape == (1, N_FEATURES)
    assert codes.getnnz(axis=1).max() == 1


def test_k_equal_to_n_components():
    X = make_data() - 0.5
    model = make_model(n_components=5, k=5, activation="identity")
    codes = run_every_method(model, X, X.shape[0])
    assert (codes.getnnz(axis=1) == 5).all()


def test_k_above_n_components_warns():
    X = make_data()
    model = make_model(n_components=4, k=9)
    with pytest.warns(UserWarning, match="k=9"):
        model.fit(X)
    assert model.transform(X).getnnz(axis=1).max() <= 4


def test_transform_k_above_n_components():
    X = make_data()
    model = make_model(n_components=4, transform_k=20, activation="identity")
    with pytest.warns(UserWarning, match="transform_k=20"):
        model.fit(X - 0.5)
    assert model.transform(X - 0.5).getnnz(axis=1).max() == 4


def test_more_components_than_samples():
    X = make_data(n_samples=5)
    model = make_model(n_components=50, k=3)
    codes = run_every_method(model, X, 5)
    assert codes.shape == (5, 50)


def test_constant_feature():
    X = make_data()
    X[:, 2] = 3.0
    run_every_method(make_model(), X, X.shape[0])


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_constant_data(value):
    X = np.full((20, N_FEATURES), value)
    run_every_method(make_model(), X, 20)


@pytest.mark.parametrize(
    "pre_bias_init",
    [
        "mean",
        "zeros",
        "geometric_median",
    ],
)
def test_constant_data_every_pre_bias_init(pre_bias_init):
    X = np.ones((10, N_FEATURES))
    model = make_model(pre_bias_init=pre_bias_init).fit(X)
    assert np.isfinite(model.pre_bias_).all()
    assert np.isfinite(model.transform(X).data).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pre_bias_init", ["mean", "zeros"])
def test_duplicated_rows_score_is_zero_or_one(dtype, pre_bias_init):
    # Every row equal: the score must not divide by the rounding error of the mean.
    X = np.repeat(make_data(n_samples=1), 10, axis=0).astype(dtype)
    model = make_model(pre_bias_init=pre_bias_init).fit(X)
    assert model.score(X) in (0.0, 1.0)
    assert model.score(sp.csr_matrix(X)) in (0.0, 1.0)


def test_all_zero_rows():
    X = make_data()
    X[5:10] = 0.0
    codes = run_every_method(make_model(), X, X.shape[0])
    zero_codes = codes[5:10].toarray()
    np.testing.assert_allclose(zero_codes, np.tile(zero_codes[0], (5, 1)))


def test_duplicated_rows():
    X = np.repeat(make_data(n_samples=4), 10, axis=0)
    codes = run_every_method(make_model(), X, X.shape[0]).toarray()
    np.testing.assert_allclose(codes[:10], np.tile(codes[0], (10, 1)), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_extreme_magnitudes(scale, dtype):
    X = (make_data() * scale).astype(dtype)
    model = make_model()
    codes = run_every_method(model, X, X.shape[0])
    assert codes.dtype == dtype
    assert np.isfinite(model.components_).all()
    assert np.isfinite(model.encoder_weights_).all()


@pytest.mark.parametrize("scale", [1e6, 1e-6])
def test_extreme_magnitudes_sparse(scale):
    X = make_sparse("csr", "array") * scale
    run_every_method(make_model(), X, X.shape[0])


def test_data_centred_at_100_does_not_diverge():
    # Finite losses of order 1e4 are no divergence.
    X = np.random.RandomState(0).standard_normal((200, N_FEATURES)) + 100
    model = make_model(pre_bias_init="zeros", max_iter=10).fit(X)
    assert model.loss_curve_[0] > 1e4
    assert np.isfinite(model.loss_curve_).all()


def test_data_centred_at_100_sgd_does_not_diverge():
    X = np.random.RandomState(0).standard_normal((200, N_FEATURES)) + 100
    model = make_model(
        pre_bias_init="zeros", solver="sgd", learning_rate_init=1e-4, max_iter=10
    ).fit(X)
    assert model.loss_curve_[0] > 1e4
    assert np.isfinite(model.loss_curve_).all()


def test_large_adam_step_on_unscaled_data_stays_finite():
    # Adam's step is at most about learning_rate_init, so the loss stays finite.
    X = make_data() * 100
    model = make_model(learning_rate_init=1e6, max_iter=3).fit(X)
    assert np.isfinite(model.loss_curve_).all()


# ----------------------------------------------------------------------
# Rejected inputs
# ----------------------------------------------------------------------


def with_value(value, row=0, column=0):
    X = make_data()
    X[row, column] = value
    return X


def with_sparse_value(value):
    X = sp.csr_matrix(make_data())
    X.data[3] = value
    return X


def with_dataframe_text():
    df = make_frame()
    df["pixel_0"] = df["pixel_0"].astype(object)
    df.loc[0, "pixel_0"] = "dark"
    return df


def with_dataframe_category():
    df = make_frame()
    df["pixel_0"] = pd.Categorical(["light", "dark"] * (len(df) // 2))
    # Numbers stored as objects convert, so the message leaves them out.
    df["pixel_1"] = df["pixel_1"].astype(object)
    return df


def with_dataframe_datetime():
    df = make_frame()
    df["pixel_0"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(df.index, unit="h")
    return df


# (case id, input factory, exception, pattern that the message must match)
BAD_TRAINING_INPUTS = [
    ("nan", lambda: with_value(np.nan), ValueError, "Input X contains NaN"),
    ("inf", lambda: with_value(np.inf), ValueError, "Input X contains infinity"),
    ("minus-inf", lambda: with_value(-np.inf), ValueError, "contains infinity"),
    ("sparse-nan", lambda: with_sparse_value(np.nan), ValueError, "contains NaN"),
    ("sparse-inf", lambda: with_sparse_value(np.inf), ValueError, "infinity"),
    ("no-rows", lambda: np.empty((0, N_FEATURES)), ValueError, r"0 sample\(s\)"),
    ("no-columns", lambda: np.empty((5, 0)), ValueError, r"0 feature\(s\)"),
    ("sparse-no-rows", lambda: sp.csr_matrix((0, N_FEATURES)), ValueError, "0 samp"),
    ("complex", lambda: make_data() + 1j, ValueError, "complex values.*X.real"),
    (
        "sparse-complex",
        lambda: sp.csr_matrix(make_data() * (1 + 1j)),
        ValueError,
        "complex values",
    ),
    ("complex-list", lambda: (make_data() + 1j).tolist(), ValueError, "complex"),
    (
        "strings",
        lambda: np.array([["a", "b"] * 3] * 4),
        ValueError,
        "contains strings.*OneHotEncoder",
    ),
    (
        "numeric-strings",
        lambda: make_data().astype(str),
        ValueError,
        r"contains strings.*astype\(float\)",
    ),
    (
        "text-object-array",
        lambda: np.array([["a", 1.0] * 3] * 4, dtype=object),
        ValueError,
        "not a number.*'a'.*OneHotEncoder",
    ),
    (
        "text-list",
        lambda: [["a", 1.0] * 3] * 4,
        ValueError,
        "contains strings.*OneHotEncoder",
    ),
    (
        "text-dataframe",
        with_dataframe_text,
        ValueError,
        "not a number.*'dark'.* in column 'pixel_0'",
    ),
    (
        "category-dataframe",
        with_dataframe_category,
        ValueError,
        "not a number.*'light'.* in column 'pixel_0'. Convert",
    ),
    (
        "datetime-dataframe",
        with_dataframe_datetime,
        ValueError,
        r"datetime or timedelta values.*pandas.Timedelta",
    ),
    (
        "datetime-array",
        lambda: np.full((4, N_FEATURES), np.datetime64("2026-01-01")),
        ValueError,
        "datetime or timedelta values",
    ),
    ("1d", lambda: make_data()[0], ValueError, "(?s)Expected 2D array.*reshape"),
    ("3d", lambda: make_data()[None], ValueError, "dim 3"),
    ("scalar", lambda: 3.0, ValueError, "Expected 2D array"),
    ("none", lambda: None, ValueError, "Expected 2D array"),
    ("np-matrix", lambda: np.asmatrix(make_data()), TypeError, "np.asarray"),
    ("series", lambda: make_frame()["pixel_0"], ValueError, "2-dimensional"),
    (
        "dataframe-missing-value",
        lambda: make_frame().astype({"pixel_0": "Float64"}).mask(make_frame() > 0.9),
        ValueError,
        "contains NaN",
    ),
]


@pytest.mark.parametrize(
    "make_input, error, pattern",
    [case[1:] for case in BAD_TRAINING_INPUTS],
    ids=[case[0] for case in BAD_TRAINING_INPUTS],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_bad_training_input_raises(method, make_input, error, pattern):
    with pytest.raises(error, match=pattern):
        getattr(make_model(), method)(make_input())


@pytest.mark.parametrize(
    "make_input, error, pattern",
    [case[1:] for case in BAD_TRAINING_INPUTS],
    ids=[case[0] for case in BAD_TRAINING_INPUTS],
)
@pytest.mark.parametrize("method", ["partial_fit", "transform", "score"])
@pytest.mark.filterwarnings("ignore:X has feature names:UserWarning")
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_bad_input_to_fitted_model_raises(fitted, method, make_input, error, pattern):
    model = fitted if method != "partial_fit" else make_model().fit(make_data())
    with pytest.raises(error, match=pattern):
        getattr(model, method)(make_input())


def codes_with_value(fitted, value):
    codes = fitted.transform(make_data()).toarray()
    codes[0, 0] = value
    return codes


BAD_CODES = [
    ("nan", lambda m: codes_with_value(m, np.nan), "Input X contains NaN"),
    ("inf", lambda m: codes_with_value(m, np.inf), "Input X contains infinity"),
    (
        "sparse-nan",
        lambda m: sp.csr_matrix(codes_with_value(m, np.nan)),
        "Input X contains NaN",
    ),
    ("no-rows", lambda m: np.empty((0, N_COMPONENTS)), r"0 sample\(s\)"),
    ("complex", lambda m: codes_with_value(m, 1.0) + 1j, "complex values"),
    ("strings", lambda m: np.full((2, N_COMPONENTS), "0"), "contains strings"),
    ("1d", lambda m: np.zeros(N_COMPONENTS), "Expected 2D array"),
]


@pytest.mark.parametrize(
    "make_codes, pattern",
    [case[1:] for case in BAD_CODES],
    ids=[case[0] for case in BAD_CODES],
)
def test_inverse_transform_bad_codes_raise(fitted, make_codes, pattern):
    with pytest.raises(ValueError, match=pattern):
        fitted.inverse_transform(make_codes(fitted))


@pytest.mark.parametrize("method", ["transform", "partial_fit", "score"])
@pytest.mark.parametrize("n_features", [N_FEATURES - 2, N_FEATURES + 3])
def test_wrong_feature_count_raises(method, n_features):
    model = make_model().fit(make_data())
    with pytest.raises(ValueError, match="features") as excinfo:
        getattr(model, method)(make_data(n_features=n_features))
    message = str(excinfo.value)
    assert f"X has {n_features} features" in message
    assert f"expecting {N_FEATURES} features" in message


@pytest.mark.parametrize("sparse_codes", [False, True])
@pytest.mark.parametrize("n_columns", [N_COMPONENTS - 3, N_COMPONENTS + 1])
def test_inverse_transform_wrong_width_raises(fitted, n_columns, sparse_codes):
    codes = np.zeros((3, n_columns))
    if sparse_codes:
        codes = sp.csr_matrix(codes)
    with pytest.raises(ValueError, match="inverse_transform expects") as excinfo:
        fitted.inverse_transform(codes)
    message = str(excinfo.value)
    assert f"X has {n_columns} columns" in message
    assert f"has {N_COMPONENTS} components" in message


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "score"])
def test_unfitted_model_raises(method):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        getattr(make_model(), method)(make_data())


INVALID_PARAMETERS = [
    ("n_components", 0),
    ("n_components", 2.5),
    ("k", 0),
    ("k", -1),
    ("k", 1.5),
    ("transform_k", 0),
    ("activation", "tanh"),
    ("solver", "lbfgs"),
    ("learning_rate_init", 0.0),
    ("learning_rate_init", -1e-3),
    ("batch_size", 0),
    ("batch_size", "all"),
    ("max_iter", 0),
    ("shuffle", "yes"),
    ("tol", -1e-4),
    ("n_iter_no_change", 0),
    ("momentum", 1.5),
    ("beta_1", 1.0),
    ("beta_2", -0.1),
    ("epsilon", 0.0),
    ("validation_fraction", 0.0),
    ("validation_fraction", 1.0),
    ("initial_k", 0),
    ("initial_k", "large"),
    ("k_schedule_fraction", 1.5),
    ("pre_bias_init", "median"),
    ("auxk_coef", -1.0),
    ("auxk_k", 0),
    ("dead_after", 0),
    ("transform_algorithm", "omp"),
    ("sparse_output", "dense"),
    ("random_state", "seed"),
    ("tied_weights", None),
]


@pytest.mark.parametrize("name, value", INVALID_PARAMETERS)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_invalid_parameter_raises(method, name, value):
    model = make_model(**{name: value})
    with pytest.raises(InvalidParameterError) as excinfo:
        getattr(model, method)(make_data())
    message = str(excinfo.value)
    assert f"'{name}' parameter" in message
    assert f"Got {value!r} instead" in message
    assert "must be" in message


@pytest.mark.parametrize("name, value", INVALID_PARAMETERS)
def test_invalid_parameter_after_fit_raises(name, value):
    model = make_model().fit(make_data())
    components, n_steps = model.components_.copy(), model.t_
    model.set_params(**{name: value})
    with pytest.raises(InvalidParameterError, match=f"'{name}' parameter"):
        model.partial_fit(make_data())
    assert np.array_equal(model.components_, components)
    assert model.t_ == n_steps


INTEGER_PARAMETERS = [
    "n_components", "k", "transform_k", "batch_size", "max_iter",
    "n_iter_no_change", "initial_k", "auxk_k", "dead_after",
]  # fmt: skip


@pytest.mark.parametrize("name", INTEGER_PARAMETERS)
@pytest.mark.parametrize("method", ["fit", "partial_fit", "transform"])
def test_bool_for_integer_parameter_raises(method, name):
    model = make_model().fit(make_data())
    fitted = {key: value for key, value in vars(model).items() if key.endswith("_")}
    model.set_params(**{name: True})
    with pytest.raises(InvalidParameterError) as excinfo:
        getattr(model, method)(make_data())
    message = str(excinfo.value)
    assert f"'{name}' parameter" in message
    assert "must be an int, not the bool True" in message
    assert f"Pass {name}=1" in message
    for key, value in fitted.items():
        assert np.array_equal(getattr(model, key), value), key


REAL_PARAMETERS = [
    "learning_rate_init", "tol", "momentum", "beta_1", "beta_2", "epsilon",
    "validation_fraction", "k_schedule_fraction", "auxk_coef",
]  # fmt: skip


@pytest.mark.parametrize("name", REAL_PARAMETERS)
def test_bool_for_real_parameter_raises(name):
    model = make_model(**{name: True})
    with pytest.raises(InvalidParameterError) as excinfo:
        model.fit(make_data())
    message = str(excinfo.value)
    assert f"'{name}' parameter" in message
    assert "must be a number, not the bool True" in message
    assert not hasattr(model, "components_")


@pytest.mark.parametrize(
    "name, value, suggestion",
    [
        ("k", True, "Pass k=1 if"),
        ("k", np.False_, None),
        ("validation_fraction", True, None),
        ("tol", False, "Pass tol=0 if"),
        ("n_components", Fraction(8), "Pass n_components=8 instead"),
        ("k", Fraction(5, 2), None),
        ("learning_rate_init", Fraction(10**400), None),
        ("learning_rate_init", Fraction(1, 10**400), None),
    ],
)
def test_odd_number_suggests_only_valid_values(name, value, suggestion):
    with pytest.raises(InvalidParameterError) as excinfo:
        make_model(**{name: value}).fit(make_data())
    message = str(excinfo.value)
    is_bool = isinstance(value, (bool, np.bool_))
    assert ("not the bool" if is_bool else "not the Fraction") in message
    if suggestion is None:
        assert "Pass" not in message
    else:
        assert suggestion in message


@pytest.mark.parametrize("name", ["learning_rate_init", "tol", "auxk_coef"])
def test_fraction_for_real_parameter_raises(name):
    model = make_model(**{name: Fraction(1, 1000)})
    with pytest.raises(InvalidParameterError) as excinfo:
        model.fit(make_data())
    message = str(excinfo.value)
    assert "not the Fraction Fraction(1, 1000)" in message
    assert f"Pass {name}=0.001 instead" in message


def test_scale_check_quiet_on_edge_data():
    tiny = make_data(n_samples=2) * 1e-5
    huge = make_data()
    huge[:, 0] = 1e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model(batch_size=2).partial_fit(tiny)
        model = make_model()
        model._warn_if_small_scale(huge)


@pytest.mark.parametrize("scale", [1e-5, 1e-200])
def test_small_scale_data_warns(scale):
    X = make_data() * scale
    with pytest.warns(UserWarning, match="learning_rate_init=0.001") as record:
        make_model().fit(X)
    scale_warnings = [w for w in record if "varies by about" in str(w.message)]
    assert len(scale_warnings) == 1
    assert "StandardScaler" in str(scale_warnings[0].message)
    assert scale_warnings[0].filename == __file__


def test_small_scale_warning_follows_step_size():
    X = make_data() * 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        make_model(learning_rate_init=1e-7).fit(X)
        make_model(solver="sgd").fit(X)
        make_model().fit(X * 1e5)


@pytest.mark.parametrize("name", ["k", "learning_rate_init"])
def test_numpy_bool_parameter_raises(name):
    model = make_model(**{name: np.True_})
    with pytest.raises(InvalidParameterError, match="not the bool np.True_"):
        model.fit(make_data())


def test_real_parameters_are_listed():
    # Every interval of reals among the constraints has a case above.
    reals = [
        name
        for name, constraints in KSparseAutoencoder._parameter_constraints.items()
        if any(getattr(c, "type", None) is Real for c in constraints)
    ]
    assert sorted(reals) == sorted(REAL_PARAMETERS)


@pytest.mark.parametrize("integer_type", [np.uint8, np.int16])
def test_small_numpy_integer_parameters(integer_type):
    params = {
        "n_components": 12, "k": 3, "transform_k": 5, "batch_size": 7,
        "max_iter": 3, "initial_k": 6, "auxk_k": 4, "dead_after": 20,
        "n_iter_no_change": 2,
    }  # fmt: skip
    X = make_data(n_samples=300)
    expected = make_model(**params).fit(X)
    typed = {name: integer_type(value) for name, value in params.items()}
    model = make_model(**typed)
    with warnings.catch_warnings():
        # Products such as n_samples * k must not overflow the small type.
        warnings.simplefilter("error", RuntimeWarning)
        model.fit(X)
        codes = model.transform(X)
        model.partial_fit(X)
    np.testing.assert_array_equal(codes.toarray(), expected.transform(X).toarray())
    assert codes.getnnz(axis=1).max() <= 5


@pytest.mark.parametrize(
    "method, action",
    [("transform", "encode"), ("score", "score"), ("inverse_transform", "decode")],
)
def test_changed_n_components_after_fit_raises(method, action):
    model = make_model().fit(make_data())
    components = model.components_.copy()
    data = make_data()
    if method == "inverse_transform":
        data = model.transform(data)
    model.set_params(n_components=2)
    message = f"Cannot {action} because n_components changed from {N_COMPONENTS} to 2"
    with pytest.raises(ValueError, match=message) as excinfo:
        getattr(model, method)(data)
    assert f"Set it back to {N_COMPONENTS}" in str(excinfo.value)
    assert np.array_equal(model.components_, components)
    model.set_params(n_components=N_COMPONENTS)
    getattr(model, method)(data)


@pytest.mark.parametrize("n_components", [10**15, 10**19])
def test_unallocatable_n_components_raises(n_components):
    model = make_model().fit(make_data())
    components = model.components_.copy()
    model.set_params(n_components=n_components)
    with pytest.raises(ValueError, match="Cannot allocate the weights") as excinfo:
        model.fit(make_data())
    assert "Lower n_components" in str(excinfo.value)
    assert np.array_equal(model.components_, components)


def test_early_stopping_one_sample_raises():
    model = make_model(early_stopping=True)
    with pytest.raises(ValueError, match="leaves none to train on"):
        model.fit(make_data(n_samples=1))


def test_batch_size_above_samples_warns():
    model = make_model(batch_size=100)
    with pytest.warns(UserWarning, match="batch_size=100"):
        model.fit(make_data(n_samples=10))
    assert model.n_iter_ == 2


# ----------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------


@pytest.mark.parametrize("make_input", [make_data, lambda: sp.csr_matrix(make_data())])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_diverging_training_raises(method, make_input):
    X = make_input() * 100
    model = make_model(solver="sgd", learning_rate_init=1e6, batch_size=8)
    with pytest.raises(TrainingDivergedError) as excinfo:
        getattr(model, method)(X)
    message = str(excinfo.value)
    assert "diverged" in message
    assert "learning_rate_init (now 1000000.0)" in message
    assert "StandardScaler" in message


def test_training_on_overflowing_input_raises():
    X = make_data().astype(np.float32)
    X[0] = 1e30
    with pytest.raises(TrainingDivergedError, match="Scale the input"):
        make_model().fit(X)


@pytest.mark.parametrize("sparse_input", [False, True])
def test_transform_overflow_raises(sparse_input):
    model = make_model().fit(make_data().astype(np.float32))
    X = make_data().astype(np.float32)
    X[2] = -3e38
    if sparse_input:
        X = sp.csr_matrix(X)
    with pytest.raises(ValueError, match="Encoding X overflowed float32") as excinfo:
        model.transform(X)
    message = str(excinfo.value)
    assert "values up to 3e+38" in message
    assert "pass float64 data" in message


@pytest.mark.parametrize("sparse_input", [False, True])
def test_inverse_transform_overflow_raises(sparse_input):
    model = make_model().fit(make_data().astype(np.float32))
    codes = np.zeros((3, N_COMPONENTS), dtype=np.float32)
    codes[1, :4] = 3e38
    if sparse_input:
        codes = sp.csr_matrix(codes)
    with pytest.raises(ValueError, match="Decoding X overflowed float32") as excinfo:
        model.inverse_transform(codes)
    assert "Pass the codes as float64" in str(excinfo.value)


def test_float64_inverse_transform_overflow_advice():
    model = make_model().fit(make_data())
    codes = np.zeros((3, N_COMPONENTS))
    # Signs that add up in the first feature, so that the sum overflows.
    codes[1] = 1e308 * np.sign(model.components_[:, 0])
    with pytest.raises(ValueError, match="Decoding X overflowed float64") as excinfo:
        model.inverse_transform(codes)
    message = str(excinfo.value)
    assert "Scale the codes down" in message
    assert "as float64" not in message


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_overflow_raises(dtype):
    model = make_model().fit(make_data().astype(dtype))
    X = make_data().astype(dtype)
    # Every column at the limit makes the encoder's products overflow.
    X[0] = np.finfo(dtype).max
    with pytest.raises(ValueError, match="Scoring X overflowed") as excinfo:
        model.score(X)
    assert "StandardScaler" in str(excinfo.value)


@pytest.mark.parametrize("scale", [1e-200, 1e-160, 1e160, 1e200])
def test_score_at_extreme_scales(scale):
    # Squares of these values underflow or overflow float64.
    X = make_data()
    model = make_model().fit(X)
    expected = model.score(X)
    # Scaling the biases with the data scales the codes and the reconstruction.
    model.pre_bias_ *= scale
    model.encoder_bias_ *= scale
    assert model.score(X * scale) == pytest.approx(expected, rel=1e-9)


def test_diverged_error_is_value_error():
    assert issubclass(TrainingDivergedError, ValueError)
