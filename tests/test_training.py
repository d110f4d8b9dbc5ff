"""Training controls of KSparseAutoencoder: partial_fit, warm start, stopping."""

import math
import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from sklearn_ksparse import KSparseAutoencoder

N_COMPONENTS = 32
K = 4


def make_model(**params):
    settings = {"n_components": N_COMPONENTS, "k": K, "random_state": 0}
    settings.update(params)
    return KSparseAutoencoder(**settings)


def fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def weights(model):
    return {
        "components_": model.components_,
        "encoder_weights_": model.encoder_weights_,
        "encoder_bias_": model.encoder_bias_,
        "pre_bias_": model.pre_bias_,
    }


def assert_same_weights(left, right):
    for name, value in weights(left).items():
        assert_array_equal(value, getattr(right, name), err_msg=name)


def max_weight_change(before, after):
    return max(
        float(np.max(np.abs(value - getattr(after, name))))
        for name, value in before.items()
    )


# ---------------------------------------------------------------------------
# partial_fit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [100, 256, "auto"])
def test_partial_fit_makes_one_pass(X, batch_size):
    model = make_model(batch_size=batch_size).partial_fit(X)
    rows_per_batch = 256 if batch_size == "auto" else batch_size

    assert model.t_ == math.ceil(X.shape[0] / rows_per_batch)
    assert model.n_iter_ == 1


def test_partial_fit_first_call_initialises(X):
    model = make_model()
    returned = model.partial_fit(X)

    assert returned is model
    assert model.components_.shape == (N_COMPONENTS, X.shape[1])
    assert model.n_features_in_ == X.shape[1]
    assert len(model.loss_curve_) == 1
    assert model.k_curve_ == [K]
    assert model.activation_frequency_.shape == (N_COMPONENTS,)
    assert model.validation_scores_ is None
    assert model.best_validation_score_ is None
    assert model.best_loss_ == model.loss_curve_[0]


def test_partial_fit_accumulates(X):
    model = make_model(batch_size=200)
    steps_per_pass = math.ceil(X.shape[0] / 200)
    model.partial_fit(X)
    first_losses = list(model.loss_curve_)
    returned = model.partial_fit(X[:1000]).partial_fit(X)

    assert returned is model
    assert model.n_iter_ == 3
    assert model.t_ == 2 * steps_per_pass + math.ceil(1000 / 200)
    assert len(model.loss_curve_) == 3
    assert model.loss_curve_[:1] == first_losses
    assert model.k_curve_ == [K, K, K]
    assert model.best_loss_ == min(model.loss_curve_)


def test_partial_fit_loss_decreases(X):
    model = make_model(learning_rate_init=1e-2)
    for _ in range(5):
        model.partial_fit(X)

    assert model.loss_curve_[-1] < model.loss_curve_[0]


def test_partial_fit_rejects_other_width(X):
    model = make_model().partial_fit(X)
    before = {name: value.copy() for name, value in weights(model).items()}
    t_before = model.t_

    with pytest.raises(ValueError, match="X has 10 features") as error:
        model.partial_fit(X[:, :10])
    assert str(X.shape[1]) in str(error.value)
    assert model.t_ == t_before
    assert model.n_iter_ == 1
    assert max_weight_change(before, model) == 0.0


def test_partial_fit_after_fit_continues(X):
    model = fit_quietly(make_model(max_iter=3), X)
    t_after_fit = model.t_
    loss_curve = list(model.loss_curve_)
    model.partial_fit(X)

    assert model.n_iter_ == 4
    assert model.loss_curve_[:3] == loss_curve
    assert model.t_ == t_after_fit + math.ceil(X.shape[0] / 256)


def test_partial_fit_large_batch_size_warns(X):
    model = make_model(batch_size=5000)
    with pytest.warns(UserWarning, match="batch_size=5000 is larger") as record:
        model.partial_fit(X)

    assert model.t_ == 1
    assert all(warning.filename == __file__ for warning in record)


@pytest.mark.parametrize(
    "changed, message",
    [
        ({"n_components": 16}, "n_components changed from 32 to 16"),
        ({"tied_weights": True}, "tied_weights changed from False to True"),
    ],
)
def test_partial_fit_rejects_changed_shape(X, changed, message):
    model = make_model().partial_fit(X)
    components = model.components_.copy()
    model.set_params(**changed)

    with pytest.raises(ValueError, match=message):
        model.partial_fit(X)
    assert model.n_iter_ == 1
    assert_array_equal(model.components_, components)


def test_warm_fit_rejects_changed_shape(X):
    model = fit_quietly(make_model(max_iter=2, warm_start=True), X)
    model.set_params(n_components=16)

    with pytest.raises(ValueError, match="n_components changed from 32 to 16"):
        model.fit(X)
    assert model.components_.shape == (N_COMPONENTS, X.shape[1])


def test_partial_fit_casts_to_new_dtype(X):
    model = make_model().partial_fit(X)
    model.partial_fit(X.astype(np.float32))

    assert model.components_.dtype == np.float32
    assert model.encoder_bias_.dtype == np.float32
    assert model.n_iter_ == 2


# ---------------------------------------------------------------------------
# Optimizer state across partial_fit calls
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        {"solver": "sgd", "learning_rate_init": 1e-12, "momentum": 0.0},
        {"learning_rate_init": 1e-12},
    ],
)
def test_partial_fit_rebuilds_changed_optimizer(X, changed):
    # After two Adam passes at learning_rate_init=1e-3, keeping the old
    # optimizer would move the weights by about 1e-3 per step. A rebuilt
    # optimizer with a step size of 1e-12 leaves them almost unchanged.
    model = make_model(learning_rate_init=1e-3).partial_fit(X).partial_fit(X)
    before = {name: value.copy() for name, value in weights(model).items()}
    model.set_params(**changed).partial_fit(X)

    assert max_weight_change(before, model) < 1e-8


def test_partial_fit_keeps_optimizer_for_unread_params(X):
    reference = make_model().partial_fit(X).partial_fit(X)
    # Adam reads neither momentum nor nesterovs_momentum.
    unread = make_model().partial_fit(X)
    unread.set_params(momentum=0.5, nesterovs_momentum=False).partial_fit(X)
    # A learning rate that differs in the last digits still rebuilds Adam,
    # whose moments and bias correction then start again.
    rebuilt = make_model().partial_fit(X)
    rebuilt.set_params(learning_rate_init=1e-3 * (1 + 1e-12)).partial_fit(X)

    assert_same_weights(reference, unread)
    assert not np.array_equal(reference.components_, rebuilt.components_)


def test_same_partial_fit_sequence_is_reproducible(X):
    models = [make_model(random_state=3) for _ in range(2)]
    for model in models:
        model.partial_fit(X[:900]).partial_fit(X[900:]).partial_fit(X)
    first, second = models

    assert_same_weights(first, second)
    assert first.loss_curve_ == second.loss_curve_
    assert first.t_ == second.t_
    assert_array_equal(first.transform(X).toarray(), second.transform(X).toarray())


def test_pickled_model_continues_identically(X):
    model = make_model().partial_fit(X)
    restored = pickle.loads(pickle.dumps(model))
    model.partial_fit(X)
    restored.partial_fit(X)

    assert_same_weights(model, restored)
    assert model.loss_curve_ == restored.loss_curve_


# ---------------------------------------------------------------------------
# fit: reproducibility, solvers, k schedule
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"early_stopping": True},
        {"solver": "sgd", "learning_rate_init": 0.05},
        {"pre_bias_init": "geometric_median", "tied_weights": True},
    ],
)
def test_fit_is_reproducible(X, params):
    first = fit_quietly(make_model(max_iter=4, random_state=5, **params), X)
    second = fit_quietly(make_model(max_iter=4, random_state=5, **params), X)

    assert_same_weights(first, second)
    assert first.loss_curve_ == second.loss_curve_
    assert_array_equal(first.transform(X).toarray(), second.transform(X).toarray())


def test_fit_loss_decreases(X):
    model = fit_quietly(make_model(max_iter=10, initial_k=None), X)
    losses = np.array(model.loss_curve_)

    assert len(losses) == 10
    assert losses[-1] < losses[0]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.parametrize("nesterovs_momentum", [True, False])
def test_sgd_solver_trains(X, nesterovs_momentum):
    model = make_model(
        solver="sgd",
        learning_rate_init=0.05,
        nesterovs_momentum=nesterovs_momentum,
        max_iter=8,
    )
    fit_quietly(model, X)

    assert np.isfinite(model.loss_curve_).all()
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    assert model.score(X) > 0.5


def test_nesterov_changes_sgd_trajectory(X):
    common = {"solver": "sgd", "learning_rate_init": 0.05, "max_iter": 3}
    nesterov = fit_quietly(make_model(nesterovs_momentum=True, **common), X)
    classical = fit_quietly(make_model(nesterovs_momentum=False, **common), X)

    assert not np.array_equal(nesterov.components_, classical.components_)


def test_fit_follows_k_schedule(X):
    model = fit_quietly(make_model(max_iter=8, k_schedule_fraction=0.5), X)

    assert model.k_curve_[0] == 4 * K
    assert model.k_curve_[-1] == K
    assert model.k_curve_[4:] == [K] * 4
    assert all(np.diff(model.k_curve_) <= 0)


# ---------------------------------------------------------------------------
# warm_start
# ---------------------------------------------------------------------------


def test_warm_start_continues_from_previous_weights(X):
    model = fit_quietly(make_model(max_iter=10), X)
    last_loss = model.loss_curve_[-1]
    t_first = model.t_
    model.set_params(warm_start=True, max_iter=3)
    fit_quietly(model, X)
    cold = fit_quietly(make_model(max_iter=3), X)
    steps_per_epoch = math.ceil(X.shape[0] / 256)

    assert model.loss_curve_[0] == pytest.approx(last_loss, rel=0.1)
    assert cold.loss_curve_[0] > 1.3 * model.loss_curve_[0]
    assert model.n_iter_ == 3
    assert len(model.loss_curve_) == 3
    assert model.t_ == t_first + 3 * steps_per_epoch


def test_warm_start_skips_k_schedule(X):
    model = fit_quietly(make_model(max_iter=4, warm_start=True), X)
    first_curve = list(model.k_curve_)
    fit_quietly(model, X)

    assert first_curve[0] == 4 * K
    assert model.k_curve_ == [K] * 4


def test_cold_refit_restarts_counters(X):
    model = fit_quietly(make_model(max_iter=3), X)
    first_components = model.components_.copy()
    fit_quietly(model, X)

    assert model.t_ == 3 * math.ceil(X.shape[0] / 256)
    assert_array_equal(model.components_, first_components)


# ---------------------------------------------------------------------------
# Stopping rules
# ---------------------------------------------------------------------------


def make_early_stopping_model():
    """Return a model whose best validation epoch comes before its last one."""
    return make_model(
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=3,
        learning_rate_init=0.02,
        max_iter=40,
    )


def test_early_stopping_restores_best_weights(X):
    model = make_early_stopping_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.fit(X)
    # The split is the first draw from the random state.
    _, X_valid = model._split_validation(X, check_random_state(0))
    scores = model.validation_scores_
    n_decay = model.k_curve_.index(K)

    assert model.n_iter_ < 40
    assert len(scores) == model.n_iter_
    assert X_valid.shape[0] == math.ceil(0.1 * X.shape[0])
    assert model.best_validation_score_ == max(scores[n_decay:])
    # The best epoch is not the last one, so the weights were restored.
    assert scores[-1] < model.best_validation_score_
    assert model.score(X_valid) == pytest.approx(
        model.best_validation_score_, rel=1e-12
    )
    assert model.best_loss_ is None


def test_early_stopping_restores_optimizer_state(X):
    model = make_early_stopping_model()
    fit_quietly(model, X)
    steps_per_epoch = math.ceil((X.shape[0] - math.ceil(0.1 * X.shape[0])) / 256)
    best_epoch = model.validation_scores_.index(model.best_validation_score_) + 1
    trainer = model._trainer

    assert best_epoch < model.n_iter_
    assert model.t_ == best_epoch * steps_per_epoch
    assert trainer.optimizer.t == model.t_
    model.partial_fit(X)
    assert model.t_ == best_epoch * steps_per_epoch + math.ceil(X.shape[0] / 256)


def test_without_early_stopping_no_validation(X):
    model = fit_quietly(make_model(max_iter=6, k_schedule_fraction=0.5), X)

    assert model.validation_scores_ is None
    assert model.best_validation_score_ is None
    assert model.best_loss_ == min(model.loss_curve_[3:])


def test_max_iter_warns_before_convergence(X):
    model = make_model(max_iter=2)
    with pytest.warns(ConvergenceWarning, match="max_iter=2") as record:
        model.fit(X)

    assert model.n_iter_ == 2
    assert all(warning.filename == __file__ for warning in record)


def test_converged_fit_does_not_warn(X):
    model = make_model(max_iter=50, tol=0.5, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model.fit(X)

    assert model.n_iter_ < 50


def test_early_stopping_needs_two_samples(X):
    model = make_model(early_stopping=True)

    with pytest.raises(ValueError, match="leaves none to train on"):
        model.fit(X[:1])


def test_early_stopping_one_held_out_warns(X):
    model = make_model(early_stopping=True, max_iter=3)

    with pytest.warns(UserWarning, match="holds out 1 of 5 samples") as record:
        model.fit(X[:5])

    assert record[0].filename == __file__
    assert len(model.validation_scores_) == model.n_iter_


def test_early_stopping_two_held_out_quiet(X):
    model = make_model(early_stopping=True, max_iter=3, validation_fraction=0.2)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X[:10])
