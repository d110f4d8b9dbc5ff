"""Fitted state: failed calls restore it, transform leaves it alone, copies keep it."""

import copy
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
import scipy.sparse as sp

from sklearn_ksparse import KSparseAutoencoder, TrainingDivergedError
from sklearn_ksparse._training import TopKTrainer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_FEATURES = 6


def make_data(n_samples=40, n_features=N_FEATURES, seed=0):
    return np.random.RandomState(seed).rand(n_samples, n_features)


def make_model(**params):
    defaults = dict(n_components=8, k=2, max_iter=3, batch_size=8, random_state=0)
    defaults.update(params)
    return KSparseAutoencoder(**defaults)


def assert_same(before, after, path="estimator"):
    """Assert that two object graphs hold equal values, arrays compared bitwise."""
    if isinstance(before, np.ndarray):
        assert isinstance(after, np.ndarray), path
        assert before.dtype == after.dtype, path
        assert before.shape == after.shape, path
        equal_nan = before.dtype.kind in "fc"
        assert np.array_equal(before, after, equal_nan=equal_nan), path
    elif isinstance(before, np.random.RandomState):
        assert isinstance(after, np.random.RandomState), path
        assert_same(before.get_state(), after.get_state(), f"{path}.state")
    elif isinstance(before, dict):
        assert isinstance(after, dict), path
        assert sorted(before) == sorted(after), path
        for key in before:
            assert_same(before[key], after[key], f"{path}[{key!r}]")
    elif isinstance(before, (list, tuple)):
        assert type(before) is type(after), path
        assert len(before) == len(after), path
        for index, (item_before, item_after) in enumerate(
            zip(before, after, strict=True)
        ):
            assert_same(item_before, item_after, f"{path}[{index}]")
    elif hasattr(before, "__dict__") and not isinstance(before, type):
        assert type(before) is type(after), path
        assert_same(vars(before), vars(after), path)
    elif isinstance(before, float) and np.isnan(before):
        assert np.isnan(after), path
    else:
        assert before == after, path


def assert_same_codes(before, after):
    assert before.dtype == after.dtype
    np.testing.assert_array_equal(before.indptr, after.indptr)
    np.testing.assert_array_equal(before.indices, after.indices)
    np.testing.assert_array_equal(before.data, after.data)


def snapshot(model):
    return copy.deepcopy(vars(model))


@pytest.fixture
def fitted():
    return make_model().fit(make_data())


# ----------------------------------------------------------------------
# A call that raises leaves the estimator as it was
# ----------------------------------------------------------------------


def nan_input():
    X = make_data()
    X[3, 2] = np.nan
    return X


BAD_INPUTS = {
    "nan": nan_input,
    "wrong-feature-count": lambda: make_data(n_features=N_FEATURES + 1),
    "strings": lambda: make_data().astype(str),
    "empty": lambda: np.empty((0, N_FEATURES)),
    "1d": lambda: make_data()[0],
}
# A new fit accepts any number of features.
UNFITTED_BAD_INPUTS = [name for name in BAD_INPUTS if name != "wrong-feature-count"]


@pytest.mark.parametrize("name", UNFITTED_BAD_INPUTS)
@pytest.mark.parametrize("warm_start", [False, True])
def test_failed_fit_keeps_model(fitted, name, warm_start):
    fitted.set_params(warm_start=warm_start)
    X = make_data()
    codes = fitted.transform(X)
    state = snapshot(fitted)
    with pytest.raises(ValueError):
        fitted.fit(BAD_INPUTS[name]())
    assert_same(state, vars(fitted))
    assert_same_codes(codes, fitted.transform(X))


@pytest.mark.parametrize("name", list(BAD_INPUTS))
@pytest.mark.parametrize("method", ["partial_fit", "transform", "score"])
def test_failed_call_keeps_model(fitted, method, name):
    X = make_data()
    codes = fitted.transform(X)
    state = snapshot(fitted)
    with pytest.raises(ValueError):
        getattr(fitted, method)(BAD_INPUTS[name]())
    assert_same(state, vars(fitted))
    assert_same_codes(codes, fitted.transform(X))


def test_failed_inverse_transform_keeps_model(fitted):
    state = snapshot(fitted)
    with pytest.raises(ValueError):
        fitted.inverse_transform(np.full((2, 8), np.nan))
    assert_same(state, vars(fitted))


@pytest.mark.parametrize("name", UNFITTED_BAD_INPUTS)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_failed_first_call_leaves_model_unfitted(method, name):
    model = make_model()
    state = snapshot(model)
    with pytest.raises(ValueError):
        getattr(model, method)(BAD_INPUTS[name]())
    assert_same(state, vars(model))
    assert not hasattr(model, "n_features_in_")
    assert not hasattr(model, "components_")


def test_failed_fit_keeps_feature_names():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(make_data(), columns=[f"f{i}" for i in range(N_FEATURES)])
    model = make_model().fit(df)
    names = model.feature_names_in_.copy()
    # Validation resets the feature names before it finds the NaN.
    with pytest.raises(ValueError):
        model.fit(nan_input())
    np.testing.assert_array_equal(model.feature_names_in_, names)


DIVERGING = dict(solver="sgd", learning_rate_init=1e6)


def diverging_input():
    return make_data() * 100


@pytest.mark.parametrize("warm_start", [False, True])
def test_diverging_fit_keeps_model(fitted, warm_start):
    X = make_data()
    codes = fitted.transform(X)
    fitted.set_params(warm_start=warm_start, **DIVERGING)
    state = snapshot(fitted)
    with pytest.raises(TrainingDivergedError, match=r"after [1-9]\d* steps"):
        fitted.fit(diverging_input())
    assert_same(state, vars(fitted))
    assert_same_codes(codes, fitted.transform(X))


def test_diverging_partial_fit_keeps_model(fitted):
    X = make_data()
    codes = fitted.transform(X)
    fitted.set_params(**DIVERGING)
    state = snapshot(fitted)
    with pytest.raises(TrainingDivergedError, match=r"after [1-9]\d* steps"):
        fitted.partial_fit(diverging_input())
    assert_same(state, vars(fitted))
    assert_same_codes(codes, fitted.transform(X))


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_diverging_first_call_leaves_model_unfitted(method):
    model = make_model(**DIVERGING)
    state = snapshot(model)
    with pytest.raises(TrainingDivergedError):
        getattr(model, method)(diverging_input())
    assert_same(state, vars(model))
    assert not hasattr(model, "components_")


def test_model_trains_after_divergence(fitted):
    fitted.set_params(**DIVERGING)
    with pytest.raises(TrainingDivergedError):
        fitted.partial_fit(diverging_input())
    n_iter = fitted.n_iter_
    fitted.set_params(solver="adam", learning_rate_init=1e-3)
    fitted.partial_fit(make_data())
    assert fitted.n_iter_ == n_iter + 1
    assert np.isfinite(fitted.components_).all()


class Interruption(Exception):
    """Raised from a patched training step."""


def interrupt_after(monkeypatch, n_steps, error=Interruption):
    """Make TopKTrainer.train_step raise ``error`` once it has run n_steps times."""
    original = TopKTrainer.train_step
    calls = []

    def train_step(self, X, k):
        if len(calls) == n_steps:
            raise error("stopped by the test")
        calls.append(None)
        return original(self, X, k)

    monkeypatch.setattr(TopKTrainer, "train_step", train_step)
    return calls


@pytest.mark.parametrize("error", [Interruption, KeyboardInterrupt])
@pytest.mark.parametrize("method", ["fit", "warm-fit", "partial_fit"])
def test_interrupted_training_keeps_model(fitted, monkeypatch, method, error):
    # 40 rows in batches of 8 make 5 steps per epoch. fit stops in its second
    # epoch, partial_fit in the middle of its only epoch.
    X = make_data()
    codes = fitted.transform(X)
    fitted.set_params(warm_start=method == "warm-fit")
    state = snapshot(fitted)
    n_steps = 3 if method == "partial_fit" else 7
    calls = interrupt_after(monkeypatch, n_steps, error)
    train = fitted.partial_fit if method == "partial_fit" else fitted.fit
    with pytest.raises(error):
        train(make_data(seed=1))
    assert len(calls) == n_steps
    assert_same(state, vars(fitted))
    assert_same_codes(codes, fitted.transform(X))


def test_interrupted_first_fit_leaves_model_unfitted(monkeypatch):
    model = make_model()
    state = snapshot(model)
    interrupt_after(monkeypatch, 3)
    with pytest.raises(Interruption):
        model.fit(make_data())
    assert_same(state, vars(model))


# ----------------------------------------------------------------------
# Read-only methods
# ----------------------------------------------------------------------


READ_INPUTS = {
    "float64": make_data,
    "float32": lambda: make_data().astype(np.float32),
    "int": lambda: (make_data() * 10).astype(np.int64),
    "csr": lambda: sp.csr_matrix(make_data()),
    "csc-float32": lambda: sp.csc_array(make_data().astype(np.float32)),
    "list": lambda: make_data().tolist(),
}


@pytest.mark.parametrize("name", list(READ_INPUTS))
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"transform_k": 20},
        {"transform_algorithm": "least_squares"},
        {"sparse_output": False},
        {"tied_weights": True},
    ],
    ids=["default", "large-transform-k", "least-squares", "dense-output", "tied"],
)
def test_transform_does_not_mutate(params, name):
    model = make_model(**params)
    with warnings.catch_warnings():
        # transform_k above n_components warns during fit.
        warnings.simplefilter("ignore", UserWarning)
        model.fit(make_data())
    state = snapshot(model)
    X = READ_INPUTS[name]()
    model.transform(X)
    model.score(X)
    model.inverse_transform(model.transform(X))
    assert_same(state, vars(model))


def test_transform_does_not_mutate_dataframe_model():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(make_data(), columns=[f"f{i}" for i in range(N_FEATURES)])
    model = make_model(sparse_output=False).fit(df).set_output(transform="pandas")
    state = snapshot(model)
    model.transform(df)
    model.score(df)
    assert_same(state, vars(model))


@pytest.mark.parametrize("sparse_input", [False, True])
def test_concurrent_transform_matches_single_call(fitted, sparse_input):
    X = make_data(n_samples=300, seed=2)
    if sparse_input:
        X = sp.csr_matrix(X)
    expected = fitted.transform(X)
    state = snapshot(fitted)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: fitted.transform(X), range(16)))
    for codes in results:
        assert_same_codes(expected, codes)
    assert_same(state, vars(fitted))


def test_concurrent_transform_of_different_inputs(fitted):
    inputs = [make_data(n_samples=50, seed=seed) for seed in range(8)]
    expected = [fitted.transform(X) for X in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(fitted.transform, inputs))
    for codes_expected, codes in zip(expected, results, strict=True):
        assert_same_codes(codes_expected, codes)


# ----------------------------------------------------------------------
# Persistence
# ----------------------------------------------------------------------


@pytest.mark.parametrize("tied_weights", [False, True])
def test_pickle_round_trip(tied_weights):
    model = make_model(tied_weights=tied_weights).fit(make_data())
    X = make_data(seed=3)
    restored = pickle.loads(pickle.dumps(model))
    assert_same(vars(model), vars(restored))
    assert_same_codes(model.transform(X), restored.transform(X))


def test_pickle_round_trip_continues_training(fitted):
    restored = pickle.loads(pickle.dumps(fitted))
    X = make_data(seed=4)
    fitted.partial_fit(X)
    restored.partial_fit(X)
    assert_same(vars(fitted), vars(restored))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_joblib_round_trip(tmp_path, dtype):
    X = make_data().astype(dtype)
    model = make_model().fit(X)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    restored = joblib.load(path)
    assert_same(vars(model), vars(restored))
    assert_same_codes(model.transform(X), restored.transform(X))


@pytest.mark.parametrize("tied_weights", [False, True])
def test_joblib_memory_map_transform_and_partial_fit(tmp_path, tied_weights):
    model = make_model(tied_weights=tied_weights).fit(make_data())
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    mapped = joblib.load(path, mmap_mode="r")
    assert isinstance(mapped.components_, np.memmap)
    assert not mapped.components_.flags.writeable

    X = make_data(seed=5)
    assert_same_codes(model.transform(X), mapped.transform(X))
    assert mapped.score(X) == model.score(X)

    mapped.partial_fit(X)
    model.partial_fit(X)
    np.testing.assert_array_equal(mapped.components_, model.components_)
    np.testing.assert_array_equal(mapped.encoder_weights_, model.encoder_weights_)
    np.testing.assert_array_equal(mapped.encoder_bias_, model.encoder_bias_)
    np.testing.assert_array_equal(mapped.pre_bias_, model.pre_bias_)
    assert mapped.t_ == model.t_
    assert_same_codes(model.transform(X), mapped.transform(X))


def test_joblib_memory_map_file_unchanged(tmp_path, fitted):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    mapped = joblib.load(path, mmap_mode="r")
    mapped.partial_fit(make_data(seed=6))
    mapped.fit(make_data(seed=7))
    reloaded = joblib.load(path)
    assert_same(vars(fitted), vars(reloaded))


def test_joblib_memory_map_failed_partial_fit_keeps_model(tmp_path, fitted):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    mapped = joblib.load(path, mmap_mode="r")
    X = make_data()
    codes = mapped.transform(X)
    state = snapshot(mapped)
    mapped.set_params(**DIVERGING)
    with pytest.raises(TrainingDivergedError):
        mapped.partial_fit(diverging_input())
    mapped.set_params(solver="adam", learning_rate_init=1e-3)
    assert_same(state, vars(mapped))
    assert_same_codes(codes, mapped.transform(X))
