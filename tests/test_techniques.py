"""Training techniques of KSparseAutoencoder, each checked by its effect.

The techniques come from Makhzani and Frey (2014), "k-Sparse Autoencoders"
(k schedule, tied weights, wider encoding) and Gao et al. (2024), "Scaling and
evaluating sparse autoencoders" (pre-encoder bias, encoder initialised as the
decoder's transpose, unit-norm atoms, AuxK).
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning

from sklearn_ksparse import KSparseAutoencoder

N_COMPONENTS = 48
K = 4


def make_model(**params):
    settings = {"n_components": N_COMPONENTS, "k": K, "random_state": 0}
    settings.update(params)
    return KSparseAutoencoder(**settings)


def fit_quietly(model, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def atom_norms(model):
    return np.linalg.norm(model.components_, axis=1)


# ---------------------------------------------------------------------------
# k schedule
# ---------------------------------------------------------------------------


def run_all_epochs(**params):
    """Return a model whose stopping rule cannot end fit before max_iter."""
    return make_model(tol=0.0, n_iter_no_change=1000, **params)


def test_schedule_starts_at_initial_k(X):
    model = fit_quietly(run_all_epochs(max_iter=8, initial_k=20), X)

    assert model.k_curve_[0] == 20


def test_auto_initial_k_is_four_times_k(X):
    model = fit_quietly(run_all_epochs(max_iter=8, initial_k="auto"), X)

    assert model.k_curve_[0] == 4 * K


def test_schedule_reaches_k_at_fraction(X):
    model = fit_quietly(
        run_all_epochs(max_iter=12, initial_k=16, k_schedule_fraction=0.5), X
    )
    n_decay = 6

    assert len(model.k_curve_) == 12
    assert model.k_curve_[n_decay - 1] > K
    assert model.k_curve_[n_decay] == K
    assert model.k_curve_[n_decay:] == [K] * (12 - n_decay)


def test_schedule_decreases_linearly(X):
    model = fit_quietly(
        run_all_epochs(max_iter=12, initial_k=16, k_schedule_fraction=0.5), X
    )
    decay = np.array(model.k_curve_[:7])

    assert_allclose(np.diff(decay), -2, atol=1)
    assert np.all(np.diff(decay) < 0)


def test_initial_k_none_keeps_k_constant(X):
    model = fit_quietly(run_all_epochs(max_iter=6, initial_k=None), X)

    assert model.k_curve_ == [K] * 6


def test_zero_schedule_fraction_keeps_k_constant(X):
    model = fit_quietly(run_all_epochs(max_iter=6, k_schedule_fraction=0.0), X)

    assert model.k_curve_ == [K] * 6


def test_initial_k_is_capped_by_n_components(X):
    model = fit_quietly(run_all_epochs(max_iter=4, initial_k=1000), X)

    assert model.k_curve_[0] == N_COMPONENTS


def test_partial_fit_uses_final_k(X):
    model = make_model()
    model.partial_fit(X)
    model.partial_fit(X)

    assert model.k_curve_ == [K, K]


# ---------------------------------------------------------------------------
# Unit-norm atoms and the encoder initialisation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tied_weights", [False, True])
def test_atoms_unit_norm_after_fit(X, tied_weights):
    model = fit_quietly(
        make_model(max_iter=3, learning_rate_init=1e-2, tied_weights=tied_weights),
        X,
    )

    assert_allclose(atom_norms(model), 1.0, rtol=1e-10)


def test_atoms_unit_norm_after_partial_fit(X):
    model = make_model(learning_rate_init=1e-2)
    for _ in range(3):
        model.partial_fit(X)
        assert_allclose(atom_norms(model), 1.0, rtol=1e-10)


def test_atoms_unit_norm_in_float32(X):
    model = fit_quietly(make_model(max_iter=3), X.astype(np.float32))

    assert model.components_.dtype == np.float32
    assert_allclose(atom_norms(model), 1.0, rtol=1e-5)


def test_unnormalized_atoms_drift_from_unit_norm(X):
    model = fit_quietly(
        make_model(max_iter=3, learning_rate_init=1e-2, normalize_components=False),
        X,
    )

    assert np.max(np.abs(atom_norms(model) - 1.0)) > 1e-2


def test_encoder_starts_as_decoder_transpose(X):
    # A negligible step size leaves the initial weights in place.
    model = fit_quietly(make_model(max_iter=1, learning_rate_init=1e-12), X)

    assert model.encoder_weights_ is not model.components_
    assert_allclose(model.encoder_weights_, model.components_, atol=1e-9)
    assert_allclose(model.encoder_bias_, 0.0, atol=1e-9)


def test_untied_encoder_moves_away_from_decoder(X):
    model = fit_quietly(make_model(max_iter=3, learning_rate_init=1e-2), X)

    assert not np.shares_memory(model.encoder_weights_, model.components_)
    assert np.max(np.abs(model.encoder_weights_ - model.components_)) > 1e-2


# ---------------------------------------------------------------------------
# Tied weights
# ---------------------------------------------------------------------------


def test_tied_encoder_is_decoder_after_fit(X):
    model = fit_quietly(make_model(max_iter=3, tied_weights=True), X)

    assert model.encoder_weights_ is model.components_


def test_tied_encoder_is_decoder_after_partial_fit(X):
    model = make_model(tied_weights=True)
    model.partial_fit(X)
    model.partial_fit(X)

    assert model.encoder_weights_ is model.components_


def test_tied_model_encodes_with_decoder_atoms(X):
    model = fit_quietly(make_model(max_iter=3, tied_weights=True), X)
    pre_activations = (X - model.pre_bias_) @ model.components_.T
    pre_activations += model.encoder_bias_
    expected_units = np.sort(np.argsort(pre_activations, axis=1)[:, -K:], axis=1)
    codes = model.transform(X)

    for row in range(0, X.shape[0], 97):
        units = codes[row].indices
        assert set(units) <= set(expected_units[row])


# ---------------------------------------------------------------------------
# Pre-encoder bias initialisation
# ---------------------------------------------------------------------------


def exact_geometric_median(points):
    """Minimise the sum of Euclidean distances with a general-purpose solver."""

    def total_distance(center):
        return np.sum(np.linalg.norm(points - center, axis=1))

    start = np.median(points, axis=0)
    result = minimize(
        total_distance,
        start,
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
    )
    return result.x


@pytest.fixture(scope="module")
def points_with_outliers():
    """Return a cluster of 200 points in 3-d plus 20 far-away outliers."""
    rng = np.random.RandomState(0)
    cluster = rng.normal(loc=[1.0, -2.0, 0.5], scale=0.3, size=(200, 3))
    outliers = rng.normal(loc=[60.0, 40.0, -50.0], scale=1.0, size=(20, 3))
    return np.vstack([cluster, outliers])


def initial_pre_bias(X, rule):
    """Fit for one epoch with a negligible step size and return ``pre_bias_``."""
    model = KSparseAutoencoder(
        n_components=8,
        k=2,
        max_iter=1,
        learning_rate_init=1e-12,
        pre_bias_init=rule,
        random_state=0,
    )
    return fit_quietly(model, X).pre_bias_


def test_geometric_median_init_matches_exact_median(points_with_outliers):
    expected = exact_geometric_median(points_with_outliers)
    pre_bias = initial_pre_bias(points_with_outliers, "geometric_median")

    assert_allclose(pre_bias, expected, atol=1e-4)


def test_geometric_median_init_resists_outliers(points_with_outliers):
    pre_bias = initial_pre_bias(points_with_outliers, "geometric_median")
    mean = points_with_outliers.mean(axis=0)
    cluster_center = np.array([1.0, -2.0, 0.5])

    assert np.linalg.norm(pre_bias - cluster_center) < 0.3
    assert np.linalg.norm(pre_bias - mean) > 5.0


def test_mean_init_is_data_mean(points_with_outliers):
    pre_bias = initial_pre_bias(points_with_outliers, "mean")

    assert_allclose(pre_bias, points_with_outliers.mean(axis=0), atol=1e-9)


def test_zeros_init_is_zero(points_with_outliers):
    pre_bias = initial_pre_bias(points_with_outliers, "zeros")

    assert_allclose(pre_bias, 0.0, atol=1e-9)


# ---------------------------------------------------------------------------
# AuxK and dead units
# ---------------------------------------------------------------------------


def fit_with_bad_start(X, auxk_coef):
    """Fit with a step size large enough to silence many units early on."""
    model = KSparseAutoencoder(
        n_components=128,
        k=4,
        max_iter=10,
        learning_rate_init=1e-2,
        initial_k=None,
        auxk_coef=auxk_coef,
        dead_after=1000,
        random_state=0,
    )
    return fit_quietly(model, X)


def test_auxk_lowers_dead_count(X):
    without_auxk = fit_with_bad_start(X, auxk_coef=0.0)
    with_auxk = fit_with_bad_start(X, auxk_coef=1.0)

    assert without_auxk.n_dead_components_ >= 10
    assert with_auxk.n_dead_components_ <= without_auxk.n_dead_components_ // 2


def test_auxk_keeps_reconstruction(X):
    without_auxk = fit_with_bad_start(X, auxk_coef=0.0)
    with_auxk = fit_with_bad_start(X, auxk_coef=1.0)

    assert with_auxk.score(X) > without_auxk.score(X) - 0.02


# ---------------------------------------------------------------------------
# Least-squares encoding
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(X):
    return fit_quietly(make_model(n_components=64, k=6, max_iter=10), X)


def reconstruction_errors(model, X, algorithm):
    model.set_params(transform_algorithm=algorithm)
    codes = model.transform(X)
    residual = X - model.inverse_transform(codes)
    return codes, np.sum(residual**2, axis=1)


def test_least_squares_keeps_support(trained, X):
    plain_codes, _ = reconstruction_errors(trained, X, "encoder")
    refit_codes, _ = reconstruction_errors(trained, X, "least_squares")

    for row in range(X.shape[0]):
        plain_units = set(plain_codes[row].indices)
        refit_units = set(refit_codes[row].indices)
        assert plain_units <= refit_units
        assert len(refit_units) <= 6


def test_least_squares_lowers_every_row_error(trained, X):
    _, plain_errors = reconstruction_errors(trained, X, "encoder")
    _, refit_errors = reconstruction_errors(trained, X, "least_squares")

    assert np.all(refit_errors <= plain_errors * (1 + 1e-6) + 1e-9)


def test_least_squares_lowers_total_error(trained, X):
    _, plain_errors = reconstruction_errors(trained, X, "encoder")
    _, refit_errors = reconstruction_errors(trained, X, "least_squares")

    assert refit_errors.sum() < 0.99 * plain_errors.sum()


def test_least_squares_raises_score(trained, X):
    plain_score = trained.set_params(transform_algorithm="encoder").score(X)
    refit_score = trained.set_params(transform_algorithm="least_squares").score(X)

    assert refit_score > plain_score


def test_least_squares_values_are_optimal(trained, X):
    codes, _ = reconstruction_errors(trained, X, "least_squares")
    centered = X - trained.pre_bias_
    for row in range(0, X.shape[0], 151):
        units = codes[row].indices
        atoms = trained.components_[units]
        expected, *_ = np.linalg.lstsq(atoms.T, centered[row], rcond=None)
        assert_allclose(codes[row].data, expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------
# Diagnostics
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_activation_frequency_is_fraction(X, activation):
    model = fit_quietly(make_model(max_iter=3, activation=activation), X)
    frequency = model.activation_frequency_

    assert frequency.shape == (N_COMPONENTS,)
    assert np.all(frequency >= 0)
    assert np.all(frequency <= 1)


def test_identity_frequencies_sum_to_k(X):
    # Every row keeps exactly k nonzero units with the identity activation.
    model = fit_quietly(make_model(max_iter=3, activation="identity"), X)

    assert model.activation_frequency_.sum() == pytest.approx(K)


def test_relu_frequencies_sum_to_at_most_k(X):
    model = fit_quietly(make_model(max_iter=3), X)

    assert model.activation_frequency_.sum() <= K + 1e-9


def test_dead_count_matches_frequency(X):
    model = fit_with_bad_start(X, auxk_coef=0.0)
    frequency = model.activation_frequency_

    assert model.n_dead_components_ == np.count_nonzero(frequency == 0)
    assert model.n_dead_components_ > 0


def test_diagnostics_after_partial_fit(X):
    model = make_model()
    model.partial_fit(X)
    frequency = model.activation_frequency_

    assert frequency.shape == (N_COMPONENTS,)
    assert np.all((frequency >= 0) & (frequency <= 1))
    assert model.n_dead_components_ == np.count_nonzero(frequency == 0)


def test_verbose_prints_each_epoch_with_dead_count(X, capsys):
    model = fit_quietly(run_all_epochs(max_iter=4, verbose=1), X)
    lines = capsys.readouterr().out.strip().splitlines()

    assert len(lines) == model.n_iter_ == 4
    for epoch, line in enumerate(lines, start=1):
        assert f"epoch {epoch}," in line
        assert "dead " in line
        assert f"k {model.k_curve_[epoch - 1]}" in line
    assert f"dead {model.n_dead_components_}" in lines[-1]


def test_silent_by_default(X, capsys):
    fit_quietly(make_model(max_iter=2), X)

    assert capsys.readouterr().out == ""
