"""The K-sparse autoencoder estimator."""

import math
import time
import warnings
from collections import deque
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
from sklearn import get_config
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
)
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._kernels import (
    SparseCodes,
    encode_pre_activations,
    encoding_pre_activations,
)
from ._optimizers import (
    default_n_threads,
    get_executor,
    in_caller_error_state,
    single_blas_thread,
)
from ._topk import CSRBuilder, apply_activation, select_topk
from ._training import (
    TopKTrainer,
    TrainingDivergedError,
    dense_rows,
    initial_parameters,
    initial_pre_bias,
    make_optimizer,
)

# The data-scale warning of Adam fits needs at least this many rows.
_MIN_ROWS_FOR_SCALE_CHECK = 16
# Other formats are converted to CSR, whose row slicing the minibatches need.
_ACCEPTED_SPARSE = "csr"
# Minibatches whose encoder product is below this many flops train with one BLAS
# thread. With the digits demo (256 components, 64 features) threaded OpenBLAS
# 0.3.31 gained nothing on an idle 2-core machine and was up to 20 times slower
# when other processes kept the cores busy.
_MIN_FLOPS_FOR_BLAS_THREADS = 2**26
_FLOAT_DTYPES = (np.float64, np.float32)
# Parameters that each solver reads; a change to one of them rebuilds the optimizer.
_SOLVER_PARAMETERS = {
    "adam": ("learning_rate_init", "beta_1", "beta_2", "epsilon"),
    "sgd": ("learning_rate_init", "momentum", "nesterovs_momentum"),
}


@contextmanager
def _restore_on_error(estimator):
    """Put back every attribute of ``estimator`` if the body raises.

    Fitted arrays are replaced, never written in place, so a shallow copy of
    ``__dict__`` is enough to restore the previous model exactly.
    """
    saved = estimator.__dict__.copy()
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(saved)
        raise


def _check_numeric_dtype(X):
    """Return X, raising a ValueError that names the fix for complex or text data.

    Lists and tuples are converted with ``np.asarray`` so that their dtype can be
    inspected. Other inputs are only inspected through their declared dtypes
    (the column dtypes of a DataFrame), so no data is converted here.
    """
    if isinstance(X, (list, tuple)):
        X = np.asarray(X)
    dtypes = getattr(X, "dtypes", None)
    if hasattr(dtypes, "tolist"):
        kinds = {getattr(dtype, "kind", None) for dtype in dtypes.tolist()}
    else:
        kinds = {getattr(getattr(X, "dtype", None), "kind", None)}
    if "c" in kinds:
        raise ValueError(
            "Complex data not supported: X contains complex values, but "
            "KSparseAutoencoder accepts real numbers only. Pass the real part "
            "(X.real), the magnitude (np.abs(X)), or both stacked as separate "
            "features."
        )
    if kinds & {"M", "m"}:
        raise ValueError(
            "X contains datetime or timedelta values, but KSparseAutoencoder "
            "accepts numbers only. Convert them to numbers first, for example "
            "to seconds since a reference time with "
            "(column - reference) / pandas.Timedelta(seconds=1), or to calendar "
            "features such as the hour and the weekday."
        )
    if kinds & {"U", "S"}:
        raise ValueError(
            "X contains strings, but KSparseAutoencoder accepts numbers only. "
            "Convert numeric text with X.astype(float), or encode categories first, "
            "for example with sklearn.preprocessing.OneHotEncoder."
        )
    return X


def _validate_numeric_data(estimator, X, reset):
    """Validate X with ``validate_data`` as a float array or CSR matrix."""
    X = _check_numeric_dtype(X)
    try:
        return validate_data(
            estimator,
            X,
            accept_sparse=_ACCEPTED_SPARSE,
            dtype=_FLOAT_DTYPES,
            reset=reset,
        )
    except ValueError as error:
        # NumPy and pandas raise this when an object column contains text.
        if not str(error).startswith("could not convert"):
            raise
        raise ValueError(
            f"X contains a value that is not a number ({error})"
            f"{_describe_text_columns(X)}. Convert the values to float, or encode "
            "text columns first, for example with "
            "sklearn.preprocessing.OneHotEncoder."
        ) from error


def _describe_text_columns(X):
    """Return ``" in column 'b'"`` for the DataFrame columns that do not
    convert to float, or an empty string for other input."""
    dtypes = getattr(X, "dtypes", None)
    if not hasattr(dtypes, "items"):
        return ""
    names = []
    for name, dtype in dtypes.items():
        if dtype.kind != "O":
            continue
        try:
            np.asarray(X[name], dtype=np.float64)
        except (TypeError, ValueError):
            names.append(repr(name))
    if not names:
        return ""
    label = "column" if len(names) == 1 else "columns"
    return f" in {label} {', '.join(names)}"


def _overflow_error(action, X, fix=None):
    """Build the ValueError for finite input whose result overflowed."""
    values = X.data if sp.issparse(X) else X
    largest = max(float(np.max(values, initial=0)), -float(np.min(values, initial=0)))
    if fix is None:
        fix = "Scale X down, for example with StandardScaler"
        if X.dtype == np.float32:
            fix += ", or pass float64 data"
    return ValueError(
        f"{action} X overflowed {X.dtype}: X has values up to {largest:.3g} in "
        f"absolute value. {fix}."
    )


class KSparseAutoencoder(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    r"""K-sparse autoencoder: an overcomplete code with k active units per sample.

    For a sample :math:`x \in \mathbb{R}^d` the model computes

    .. math::

        a &= W_{enc} (x - b_{pre}) + b_{enc}, \\
        z &= \sigma(\operatorname{TopK}_k(a)), \\
        \hat{x} &= W_{dec}^{\top} z + b_{pre},

    where :math:`\operatorname{TopK}_k` keeps the k largest of the
    ``n_components`` pre-activations and sets the others to zero, and
    :math:`\sigma` is the identity or ReLU applied to the kept values. The rows
    of :math:`W_{dec}` are the decoder atoms ``components_``. Training minimises

    .. math::

        L = \frac{1}{2n} \sum_{i=1}^{n} \lVert x_i - \hat{x}_i \rVert^2
            + \lambda_{aux} \frac{1}{2n} \sum_{i=1}^{n}
              \lVert (x_i - \hat{x}_i) - \hat{e}_i \rVert^2

    by minibatch Adam or momentum SGD, with gradients flowing only through the
    kept units. :math:`\hat{e}_i = W_{dec}^{\top} \sigma(\operatorname{TopK}_{k_{aux}}
    (a_i|_{dead}))` is the reconstruction of the error by the ``auxk_k`` largest
    pre-activations among the dead units (AuxK), which pulls units that stopped
    firing back into use.

    The method follows Makhzani and Frey [1]_ (top-k selection, tied weights, a
    k that decreases during training, encoding with ``transform_k`` units for
    classifier features) and Gao et al. [2]_ (pre-encoder bias, encoder
    initialised as the decoder's transpose, unit-norm atoms, AuxK).

    Parameters
    ----------
    n_components : int, default=256
        Number of hidden units (dictionary atoms).
    k : int, default=16
        Number of active units per sample during training. Values larger than
        ``n_components`` are reduced to ``n_components`` with a warning.
    transform_k : int, default=None
        Number of active units per sample in :meth:`transform`. None means
        ``k``. Makhzani and Frey encode with a multiple of ``k`` (for example
        ``3 * k``) when the codes feed a classifier. Values larger than
        ``n_components`` are reduced to ``n_components``, with a warning from
        :meth:`fit` and :meth:`partial_fit`.
    activation : {"relu", "identity"}, default="relu"
        Applied to the kept pre-activations. With "relu" a row can have fewer
        than k nonzeros; "identity" is the linear model of Makhzani and Frey.
    solver : {"adam", "sgd"}, default="adam"
        Optimizer.
    learning_rate_init : float, default=1e-3
        Step size of the optimizer.
    batch_size : int or "auto", default="auto"
        Rows per minibatch. "auto" means ``min(256, n_samples)``.
    max_iter : int, default=200
        Maximum number of epochs (passes over the training rows) in :meth:`fit`.
    shuffle : bool, default=True
        Shuffle the rows before each epoch.
    tol : float, default=1e-4
        Relative tolerance: training stops once the loss (or, with
        ``early_stopping``, the validation score) has not improved by at least
        ``tol`` times its best value for ``n_iter_no_change`` epochs in a row.
    n_iter_no_change : int, default=10
        Number of epochs without improvement tolerated before stopping.
    momentum : float, default=0.9
        Momentum of the "sgd" solver, in [0, 1].
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum with the "sgd" solver.
    beta_1 : float, default=0.9
        Decay rate of Adam's first moment estimate, in [0, 1).
    beta_2 : float, default=0.999
        Decay rate of Adam's second moment estimate, in [0, 1).
    epsilon : float, default=1e-8
        Adam's numerical stability term.
    warm_start : bool, default=False
        Start :meth:`fit` from the weights of the previous fit instead of a new
        initialisation. A warm-started fit trains with ``k`` from its first
        epoch (no k schedule) and starts a new optimizer.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their explained
        variance stops improving, and keep the best weights.
    validation_fraction : float, default=0.1
        Fraction of rows held out when ``early_stopping`` is True.
    tied_weights : bool, default=False
        Use the decoder atoms as encoder weights, ``W_enc = W_dec``.
    initial_k : int, "auto" or None, default="auto"
        Number of active units in the first epoch. It decreases linearly to
        ``k`` over the first ``k_schedule_fraction`` of ``max_iter``, so that
        more units receive gradient early and fewer die. "auto" means
        ``min(4 * k, n_components)``; None trains with ``k`` from the start.
        Ignored by warm-started fits and by :meth:`partial_fit`.
    k_schedule_fraction : float, default=0.25
        Fraction of ``max_iter`` over which k decreases to its final value.
    pre_bias_init : {"mean", "geometric_median", "zeros"}, default="mean"
        Initial value of ``b_pre``: the mean of the training rows, their
        geometric median (on at most 4096 of them), or zero.
    normalize_components : bool, default=True
        Keep the decoder atoms at unit norm: the gradient component parallel to
        each atom is removed before each step and the atoms are rescaled after.
    auxk_coef : float, default=1/32
        Weight of the auxiliary loss; 0 disables it. Both terms of the loss
        are plain squared errors, whereas Gao et al. divide each by a variance,
        so the same value acts roughly ``1 / FVU`` times more weakly here
        (FVU being the fraction of variance the main reconstruction leaves).
        Raise it towards 1 when many units stay dead.
    auxk_k : int or "auto", default="auto"
        Number of dead units that reconstruct the error in the auxiliary loss.
        "auto" means ``max(1, n_features // 2)``.
    dead_after : int, default=10000
        A unit counts as dead once it has not fired for this many training
        samples.
    transform_algorithm : {"encoder", "least_squares"}, default="encoder"
        How :meth:`transform` computes the code values. "encoder" uses the
        encoder's activations. "least_squares" keeps the encoder's top
        ``transform_k`` units and refits their values by least squares on the
        selected atoms, which lowers the reconstruction error at extra cost;
        the refitted values are not constrained to be non-negative.
    sparse_output : bool, default=True
        Return CSR matrices from :meth:`transform`; False returns dense arrays.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffling and the validation split.
    verbose : int, default=0
        Print one line per epoch with the loss, k, dead units and time.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Decoder atoms, the rows of :math:`W_{dec}`.
    encoder_weights_ : ndarray of shape (n_components, n_features)
        Encoder weights :math:`W_{enc}`; the same array as ``components_`` when
        ``tied_weights`` is True.
    encoder_bias_ : ndarray of shape (n_components,)
        Encoder bias :math:`b_{enc}`.
    pre_bias_ : ndarray of shape (n_features,)
        Pre-encoder bias :math:`b_{pre}`, subtracted before encoding and added
        back after decoding.
    n_iter_ : int
        Number of epochs run by the last :meth:`fit` call, plus one for each
        :meth:`partial_fit` call since. A warm-started fit counts only its own
        epochs, so ``n_iter_ <= max_iter`` right after :meth:`fit`.
    t_ : int
        Number of optimizer steps (minibatches) since the weights were
        initialised, summed over warm-started fits and :meth:`partial_fit`
        calls. When ``early_stopping`` restores the best epoch's weights, it
        restores the optimizer state of that epoch too, so ``t_`` counts the
        steps up to that epoch and :meth:`partial_fit` continues from there.
    loss_curve_ : list of float
        Mean training loss of each of the ``n_iter_`` epochs, one per
        :meth:`partial_fit` call.
    k_curve_ : list of int
        Number of active units used in each of the ``n_iter_`` epochs.
    activation_frequency_ : ndarray of shape (n_components,)
        Fraction of the training rows in which each unit was nonzero during the
        last epoch, or during the epoch whose weights ``early_stopping`` kept.
    n_dead_components_ : int
        Number of units that were zero on every row of that epoch.
    validation_scores_ : list of float or None
        Explained variance on the held-out rows after each epoch of the last
        :meth:`fit`, when ``early_stopping`` is True. The rows are encoded by
        the encoder with that epoch's k, whatever ``transform_k`` and
        ``transform_algorithm`` are.
    best_validation_score_ : float or None
        Best of ``validation_scores_`` after the k schedule ended; the weights
        of that epoch are the ones kept.
    best_loss_ : float or None
        Lowest training loss after the k schedule ended, including the
        :meth:`partial_fit` calls since; None after a fit with
        ``early_stopping``.
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit`, when ``X`` has string
        column names.

    See Also
    --------
    sklearn.decomposition.MiniBatchDictionaryLearning : Sparse coding with a
        learned dictionary and an iterative solver per sample.
    sklearn.neural_network.BernoulliRBM : Another unsupervised feature learner.

    References
    ----------
    .. [1] A. Makhzani and B. Frey, "k-Sparse Autoencoders", ICLR 2014.
       https://arxiv.org/abs/1312.5663
    .. [2] L. Gao et al., "Scaling and evaluating sparse autoencoders", 2024.
       https://arxiv.org/abs/2406.04093

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn_ksparse import KSparseAutoencoder
    >>> X, _ = load_digits(return_X_y=True)
    >>> model = KSparseAutoencoder(n_components=128, k=8, max_iter=5, random_state=0)
    >>> codes = model.fit_transform(X / 16)
    >>> codes.shape
    (1797, 128)
    >>> int(codes.getnnz(axis=1).max()) <= 8
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
        "transform_k": [Interval(Integral, 1, None, closed="left"), None],
        "activation": [StrOptions({"relu", "identity"})],
        "solver": [StrOptions({"adam", "sgd"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "tied_weights": ["boolean"],
        "initial_k": [
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
            None,
        ],
        "k_schedule_fraction": [Interval(Real, 0, 1, closed="both")],
        "pre_bias_init": [StrOptions({"mean", "geometric_median", "zeros"})],
        "normalize_components": ["boolean"],
        "auxk_coef": [Interval(Real, 0, None, closed="left")],
        "auxk_k": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "dead_after": [Interval(Integral, 1, None, closed="left")],
        "transform_algorithm": [StrOptions({"encoder", "least_squares"})],
        "sparse_output": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_components=256,
        *,
        k=16,
        transform_k=None,
        activation="relu",
        solver="adam",
        learning_rate_init=1e-3,
        batch_size="auto",
        max_iter=200,
        shuffle=True,
        tol=1e-4,
        n_iter_no_change=10,
        momentum=0.9,
        nesterovs_momentum=True,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        warm_start=False,
        early_stopping=False,
        validation_fraction=0.1,
        tied_weights=False,
        initial_k="auto",
        k_schedule_fraction=0.25,
        pre_bias_init="mean",
        normalize_components=True,
        auxk_coef=1 / 32,
        auxk_k="auto",
        dead_after=10000,
        transform_algorithm="encoder",
        sparse_output=True,
        random_state=None,
        verbose=0,
    ):
        self.n_components = n_components
        self.k = k
        self.transform_k = transform_k
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.tied_weights = tied_weights
        self.initial_k = initial_k
        self.k_schedule_fraction = k_schedule_fraction
        self.pre_bias_init = pre_bias_init
        self.normalize_components = normalize_components
        self.auxk_coef = auxk_coef
        self.auxk_k = auxk_k
        self.dead_after = dead_after
        self.transform_algorithm = transform_algorithm
        self.sparse_output = sparse_output
        self.random_state = random_state
        self.verbose = verbose

    def _check_fitted_shape(self, names, action, fix):
        """Raise if a parameter in ``names`` no longer matches the fitted weights.

        ``n_components`` and ``tied_weights`` set the shape of the weights, and
        ``set_params`` can change them after fit. ``action`` is what cannot be
        done (such as "encode") and ``fix`` the advice that ends the message.
        """
        fitted = {
            "n_components": self.components_.shape[0],
            "tied_weights": self._trainer.tied_weights,
        }
        changed = [
            f"{name} changed from {fitted[name]!r} to {getattr(self, name)!r}"
            for name in names
            if getattr(self, name) != fitted[name]
        ]
        if changed:
            raise ValueError(
                f"Cannot {action} because {' and '.join(changed)} since the model "
                f"was fitted, and the fitted weights have the old shape. {fix}"
            )

    def _check_fitted_n_components(self, action):
        """Raise if ``n_components`` changed through ``set_params`` since fit.

        Encoding clamps k to ``n_components``, so a changed value would
        silently keep fewer units than the fitted model has.
        """
        fitted = self.components_.shape[0]
        self._check_fitted_shape(
            ["n_components"],
            action,
            f"Set it back to {fitted}, or call fit to train a new model.",
        )

    def _check_output_container(self):
        """Raise a ValueError when ``set_output`` requests a DataFrame of sparse
        codes."""
        container = _get_output_config("transform", self)["dense"]
        if self.sparse_output and container != "default":
            raise ValueError(
                f"set_output(transform={container!r}) needs dense codes, but "
                "sparse_output=True makes transform return a SciPy sparse matrix. "
                f"Set sparse_output=False to get {container} output, or call "
                "set_output(transform='default')."
            )

    def _validate_params(self):
        """Check the parameters against ``_parameter_constraints``, and reject
        booleans and number types that the constraints mishandle.

        scikit-learn's ``Interval(Integral, ...)`` and ``Interval(Real, ...)``
        accept True and False, because bool subclasses int, and
        ``n_components=True`` then fails deep inside NumPy while ``k=True``
        silently means 1. NumPy booleans are checked first, because the
        constraints reject them with a message that does not say why, and so
        are real numbers such as ``fractions.Fraction``, on which scikit-learn
        1.9's ``Interval`` raises a TypeError from ``np.isnan``.
        """
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            intervals = [c for c in constraints if isinstance(c, Interval)]
            if not intervals:
                continue
            if isinstance(value, (bool, np.bool_)):
                raise InvalidParameterError(
                    self._bool_parameter_message(name, value, intervals)
                )
            if isinstance(value, Real) and not isinstance(
                value, (int, float, np.number)
            ):
                raise InvalidParameterError(
                    self._odd_number_message(name, value, intervals)
                )
        super()._validate_params()

    def _odd_number_message(self, name, value, intervals):
        """Return the error message for a real number of another type, such as
        ``fractions.Fraction``, with a suggestion only where it is valid."""
        integral = intervals[0].type is Integral
        kind = "an int" if integral else "an int or a float"
        message = (
            f"The {name!r} parameter of {type(self).__name__} must be {kind}, "
            f"not the {type(value).__name__} {value!r}."
        )
        try:
            suggestion = int(value) if integral else float(value)
        except (OverflowError, ValueError):
            return message
        if suggestion == value or not integral:
            if any(interval.is_satisfied_by(suggestion) for interval in intervals):
                message += f" Pass {name}={suggestion!r} instead."
        return message

    def _bool_parameter_message(self, name, value, intervals):
        """Return the error message for a boolean given for a number."""
        kind = "an int" if intervals[0].type is Integral else "a number"
        message = (
            f"The {name!r} parameter of {type(self).__name__} must be {kind}, "
            f"not the bool {value!r}."
        )
        # Suggest the integer only where it is itself a valid value.
        if any(interval.is_satisfied_by(int(value)) for interval in intervals):
            message += f" Pass {name}={int(value)} if that is what you mean."
        return message

    # ------------------------------------------------------------------
    # Effective values derived from the parameters
    # ------------------------------------------------------------------

    def _effective_k(self, value, name):
        """Clamp a number of active units to ``n_components``, with a warning.

        Returns a Python int: products such as ``n_samples * k`` would
        overflow a small NumPy integer type such as ``np.uint8``.
        """
        value = int(value)
        if value > self.n_components:
            warnings.warn(
                f"{name}={value} is larger than n_components={self.n_components}; "
                f"using {name}={self.n_components}. Lower {name} or raise "
                "n_components to silence this warning.",
                UserWarning,
                # _effective_k, _training_k, fit or partial_fit,
                # _fit_context's wrapper, caller
                stacklevel=5,
            )
            return int(self.n_components)
        return value

    def _training_k(self):
        """Return the k used in training, warning if k or transform_k is too large.

        ``transform_k`` is checked here so that its warning comes once per fit
        instead of once per :meth:`transform` call.
        """
        if self.transform_k is not None:
            self._effective_k(self.transform_k, "transform_k")
        return self._effective_k(self.k, "k")

    def _k_schedule(self, k, warm):
        """Return the number of active units for each epoch of :meth:`fit`.

        A warm-started fit uses ``k`` from its first epoch, because raising k
        again would disturb weights already trained with ``k`` units.
        """
        if warm or self.initial_k is None:
            start = k
        elif self.initial_k == "auto":
            start = min(4 * k, int(self.n_components))
        else:
            start = min(max(int(self.initial_k), k), int(self.n_components))
        # The last epoch always trains with k, whatever the fraction.
        n_decay = min(int(self.k_schedule_fraction * self.max_iter), self.max_iter - 1)
        if n_decay == 0 or start == k:
            return _KSchedule(k, k, 0)
        return _KSchedule(start, k, n_decay)

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(256, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                f"batch_size={self.batch_size} is larger than the number of "
                f"samples ({n_samples}); using batch_size={n_samples}.",
                UserWarning,
                # _batch_size, fit or partial_fit, _fit_context's wrapper, caller
                stacklevel=4,
            )
            return n_samples
        return int(self.batch_size)

    def _optimizer_settings(self):
        """Return the solver and the values of the parameters that it reads."""
        names = _SOLVER_PARAMETERS[self.solver]
        return self.solver, {name: getattr(self, name) for name in names}

    # ------------------------------------------------------------------
    # Training
    # ------------------------------------------------------------------

    def _validate_training_input(self, X, reset):
        return _validate_numeric_data(self, X, reset=reset)

    def _new_trainer(self, X, random_state):
        self._warn_if_small_scale(X)
        pre_bias = initial_pre_bias(X, self.pre_bias_init, X.dtype, random_state)
        n_components = int(self.n_components)
        try:
            params = initial_parameters(
                n_components, pre_bias, self.tied_weights, random_state
            )
            optimizer = self._make_optimizer(params)
        except (MemoryError, ValueError) as error:
            # NumPy raises ValueError for shapes beyond its maximum size.
            shape = (n_components, X.shape[1])
            raise ValueError(
                f"Cannot allocate the weights for n_components={n_components} "
                f"({shape[0]} x {shape[1]} values, several times over for the "
                f"optimizer): {error}. Lower n_components."
            ) from error
        return self._make_trainer(params, optimizer)

    def _warn_if_small_scale(self, X, max_rows=256):
        """Warn when X varies too little for Adam's step size.

        Adam moves each weight by up to about ``learning_rate_init`` a step,
        whatever the scale of the data. With the default step of 1e-3, a fit
        of 300 x 6 standard normal rows (``n_components=8, k=3``, 20 epochs)
        scored 0.48 at unit scale and at 1e-3, 0.21 at 1e-4 and below zero
        at 1e-5. The spread is the root mean square deviation from the column
        means, on up to ``max_rows`` evenly spaced rows, so that no random
        numbers are drawn.
        """
        n_samples = X.shape[0]
        # A handful of rows, such as a first partial_fit call on two rows,
        # cannot show the spread of the data.
        if self.solver != "adam" or n_samples < _MIN_ROWS_FOR_SCALE_CHECK:
            return
        rows = np.unique(np.linspace(0, n_samples - 1, min(n_samples, max_rows)))
        deviation = dense_rows(X, rows.astype(np.intp), np.float64)
        squares = _ScaledSumOfSquares()
        with np.errstate(all="ignore"):
            # Values near the float64 limit overflow the mean, and such data
            # is not small, so the check stops when the sum is not finite.
            deviation -= deviation.mean(axis=0)
            squares.add(deviation)
        if not squares.is_finite or squares.ssq == 0:
            return
        spread = squares.scale * math.sqrt(squares.ssq / deviation.size)
        if spread < 0.1 * self.learning_rate_init:
            warnings.warn(
                f"X varies by about {spread:.3g} around its column means, less "
                f"than a tenth of learning_rate_init={self.learning_rate_init}. "
                "Adam moves each weight by up to about learning_rate_init a "
                "step, so the fit will be poor. Scale X to unit variance, for "
                "example with StandardScaler, or lower learning_rate_init.",
                UserWarning,
                # _warn_if_small_scale, _new_trainer, fit or partial_fit,
                # _fit_context's wrapper, caller
                stacklevel=5,
            )

    def _make_optimizer(self, params):
        names = [name for name in TopKTrainer.PARAM_ORDER if name in params]
        solver, hyperparams = self._optimizer_settings()
        return make_optimizer([params[name] for name in names], solver, hyperparams)

    def _make_trainer(self, params, optimizer):
        n_features = params["pre_bias"].shape[0]
        auxk_k = max(1, n_features // 2) if self.auxk_k == "auto" else int(self.auxk_k)
        return TopKTrainer(
            params,
            optimizer,
            activation=self.activation,
            normalize_components=self.normalize_components,
            auxk_coef=self.auxk_coef,
            auxk_k=auxk_k,
            dead_after=int(self.dead_after),
        )

    def _continued_trainer(self, dtype, keep_optimizer):
        """Copy the fitted trainer with the current parameters applied.

        The weights are cast to ``dtype``. The optimizer state carries over
        only when ``keep_optimizer`` is True and the dtype, the solver and the
        solver's parameters are unchanged. Otherwise a new optimizer starts
        from zero moments. The step count and dead-unit counters always carry
        over.
        """
        self._check_warm_structure()
        previous = self._trainer.copy()
        params = previous.params
        same_dtype = params["components"].dtype == dtype
        if not same_dtype:
            params = {name: value.astype(dtype) for name, value in params.items()}
        same_settings = self._fitted_optimizer_settings == self._optimizer_settings()
        if keep_optimizer and same_dtype and same_settings:
            optimizer = previous.optimizer
        else:
            optimizer = self._make_optimizer(params)
        trainer = self._make_trainer(params, optimizer)
        trainer.samples_since_fired = previous.samples_since_fired
        trainer.n_steps = previous.n_steps
        return trainer

    def _check_warm_structure(self):
        """Raise if a parameter that shapes the weights changed since the fit."""
        self._check_fitted_shape(
            ["n_components", "tied_weights"],
            "continue training",
            "Set the parameters back, or call fit with warm_start=False to train "
            "a new model.",
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the autoencoder on X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data. Sparse input is densified one minibatch at a time.
        y : None
            Ignored.

        Returns
        -------
        self : KSparseAutoencoder
            Fitted estimator.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from sklearn_ksparse import KSparseAutoencoder
        >>> X = load_digits().data[:300] / 16
        >>> model = KSparseAutoencoder(n_components=32, k=4, max_iter=5, random_state=0)
        >>> model.fit(X)
        KSparseAutoencoder(k=4, max_iter=5, n_components=32, random_state=0)
        >>> model.components_.shape
        (32, 64)

        The first epochs keep more units, ``min(4 * k, n_components)``, and the
        number decreases to ``k`` over ``k_schedule_fraction`` of the epochs:

        >>> model.k_curve_
        [16, 4, 4, 4, 4]
        """
        with _restore_on_error(self):
            warm = self.warm_start and hasattr(self, "_trainer")
            X = self._validate_training_input(X, reset=not warm)
            k = self._training_k()
            random_state = check_random_state(self.random_state)
            X_train, X_valid = self._split_validation(X, random_state)
            if warm:
                trainer = self._continued_trainer(X.dtype, keep_optimizer=False)
            else:
                trainer = self._new_trainer(X_train, random_state)
            batch_size = self._batch_size(X_train.shape[0])
            schedule = self._k_schedule(k, warm)
            history = self._fit_epochs(
                trainer, X_train, X_valid, schedule, batch_size, random_state
            )
            self._store_fit(trainer, history, random_state)
        return self

    def _split_validation(self, X, random_state):
        if not self.early_stopping:
            return X, None
        n_samples = X.shape[0]
        n_valid = int(np.ceil(self.validation_fraction * n_samples))
        if n_samples - n_valid < 1:
            raise ValueError(
                f"Invalid validation_fraction={self.validation_fraction}: it holds "
                f"out {n_valid} of {n_samples} samples and leaves none to train on. "
                "Lower validation_fraction, pass more samples, or set "
                "early_stopping=False."
            )
        if n_valid == 1:
            warnings.warn(
                f"early_stopping holds out 1 of {n_samples} samples. The explained "
                "variance of one sample is always 0 or 1, so training stops after "
                f"n_iter_no_change={self.n_iter_no_change} epochs whatever the "
                "loss does. Pass more samples, raise validation_fraction, or set "
                "early_stopping=False.",
                UserWarning,
                stacklevel=4,
            )
        order = random_state.permutation(n_samples)
        valid_rows = np.sort(order[:n_valid])
        train_rows = np.sort(order[n_valid:])
        return X[train_rows], X[valid_rows]

    def _fit_epochs(
        self, trainer, X_train, X_valid, schedule, batch_size, random_state
    ):
        """Run the epochs of :meth:`fit` with the k schedule and stopping rules."""
        n_decay = schedule.n_decay
        history = _FitHistory(self.tol, self.n_iter_no_change)
        start_time = time.perf_counter()
        for epoch in range(self.max_iter):
            epoch_k = schedule.k_at(epoch)
            loss, fired = self._run_epoch(
                trainer, X_train, epoch_k, batch_size, random_state
            )
            score = self._validation_score(trainer, X_valid, epoch_k)
            history.record(loss, epoch_k, fired / X_train.shape[0], score)
            self._print_epoch(history, time.perf_counter() - start_time)
            if epoch < n_decay:
                continue
            if history.should_stop(trainer, after_schedule=epoch == n_decay):
                break
        else:
            monitored = "training loss" if X_valid is None else "validation score"
            warnings.warn(
                f"KSparseAutoencoder stopped after max_iter={self.max_iter} "
                f"epochs before the {monitored} converged. Raise max_iter or tol.",
                ConvergenceWarning,
                # _fit_epochs, fit, _fit_context's wrapper, caller
                stacklevel=4,
            )
        return history

    def _validation_score(self, trainer, X_valid, k):
        if X_valid is None:
            return None
        return _explained_variance(X_valid, self._params_encoder(trainer.params), k)

    def _run_epoch(self, trainer, X, k, batch_size, random_state):
        steps_before = trainer.n_steps
        n_components, n_features = trainer.params["components"].shape
        small = 2 * batch_size * n_components * n_features < _MIN_FLOPS_FOR_BLAS_THREADS
        # Large minibatches are split among the optimizer's threads, each with
        # one BLAS thread, so that the top-k selection and the sparse products
        # run in parallel too. Small ones run in order, also on one BLAS thread.
        # Only the main thread limits BLAS. In other threads the rows run in
        # order with BLAS as it is, unless BLAS already runs one thread.
        try:
            with single_blas_thread(), np.errstate(over="ignore", invalid="ignore"):
                parallel = not small and default_n_threads() == 1
                trainer.n_workers = trainer.n_threads if parallel else 1
                return trainer.run_epoch(X, k, batch_size, self.shuffle, random_state)
        except TrainingDivergedError as error:
            n_steps = trainer.n_steps - steps_before
            raise TrainingDivergedError(
                self._divergence_message(error, n_steps, X.dtype)
            ) from error

    def _divergence_message(self, error, n_steps, dtype):
        kept = "The model was left as it was before this call."
        if n_steps == 0:
            precision = "" if dtype == np.float64 else ", or pass float64 data"
            return (
                f"Training failed at the first step: {error}, so the input "
                "values are too large for the weights' floating-point type. "
                f"Scale the input, for example with StandardScaler{precision}. "
                f"{kept}"
            )
        return (
            f"Training diverged: {error} after {n_steps} steps of this call. "
            f"Lower learning_rate_init (now {self.learning_rate_init}) or scale "
            f"the input, for example with StandardScaler. {kept}"
        )

    def _params_encoder(self, params):
        return _Encoder(
            params.get("encoder_weights", params["components"]),
            params["encoder_bias"],
            params["pre_bias"],
            params["components"],
            self.activation,
        )

    def _print_epoch(self, history, elapsed):
        if not self.verbose:
            return
        line = (
            f"[KSparseAutoencoder] epoch {len(history.losses)}, "
            f"loss {history.losses[-1]:.6g}, k {history.ks[-1]}, "
            f"dead {int(np.sum(history.frequency == 0))}"
        )
        if history.scores:
            line += f", validation score {history.scores[-1]:.6g}"
        print(f"{line}, {elapsed:.2f} s")

    def _store_fit(self, trainer, history, random_state):
        frequency = history.frequency
        if history.best_trainer is not None:
            trainer = history.best_trainer
            frequency = history.best_frequency
        self._commit_trainer(trainer, random_state)
        self.n_iter_ = len(history.losses)
        self.loss_curve_ = list(history.losses)
        self.k_curve_ = list(history.ks)
        self._store_frequency(frequency)
        self.validation_scores_ = list(history.scores) if history.scores else None
        self.best_validation_score_ = history.best_score
        self.best_loss_ = None if history.scores else history.best_loss

    def _commit_trainer(self, trainer, random_state):
        """Keep a successfully trained copy and publish its weights."""
        self._trainer = trainer
        self._random_state = random_state
        self._fitted_optimizer_settings = self._optimizer_settings()
        self._export_params()

    def _store_frequency(self, frequency):
        self.activation_frequency_ = frequency
        self.n_dead_components_ = int(np.count_nonzero(frequency == 0))

    def _export_params(self):
        params = self._trainer.params
        self.components_ = params["components"]
        self.encoder_weights_ = params.get("encoder_weights", params["components"])
        self.encoder_bias_ = params["encoder_bias"]
        self.pre_bias_ = params["pre_bias"]
        self.t_ = self._trainer.n_steps

    _EXPORTED_PARAMS = {
        "components_": "components",
        "encoder_weights_": "encoder_weights",
        "encoder_bias_": "encoder_bias",
        "pre_bias_": "pre_bias",
    }

    def __getstate__(self):
        # The public weights are the trainer's arrays. joblib does not keep
        # shared references between arrays, so storing them once and
        # re-linking on load avoids a second copy in the file and in memory.
        # object.__getstate__ can return the live __dict__, so copy it.
        state = dict(super().__getstate__())
        trainer = state.get("_trainer")
        if trainer is None:
            return state
        for attribute, name in self._EXPORTED_PARAMS.items():
            shared = trainer.params.get(name, trainer.params["components"])
            if state.get(attribute) is shared:
                del state[attribute]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        trainer = state.get("_trainer")
        if trainer is None:
            return
        for attribute, name in self._EXPORTED_PARAMS.items():
            if attribute not in state:
                shared = trainer.params.get(name, trainer.params["components"])
                setattr(self, attribute, shared)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Make one pass over X in minibatches, initialising on the first call.

        The first call initialises the weights from X. Later calls, also after
        :meth:`fit`, continue from the current weights and optimizer state and
        require the same number of features. A call after ``solver`` or one of
        the solver's parameters (``learning_rate_init``, ``beta_1``, ``beta_2``,
        ``epsilon``, ``momentum``, ``nesterovs_momentum``) changed, or with X in
        another float dtype, starts a new optimizer from the current weights.
        Changing ``n_components`` or ``tied_weights`` between calls raises a
        ValueError. ``k`` is used throughout: the k schedule and early stopping
        apply to :meth:`fit` only.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows.
        y : None
            Ignored.

        Returns
        -------
        self : KSparseAutoencoder
            The updated estimator.

        Examples
        --------
        Train on three chunks of rows, one optimizer step each:

        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from sklearn_ksparse import KSparseAutoencoder
        >>> X = load_digits().data[:300] / 16
        >>> model = KSparseAutoencoder(n_components=32, k=4, random_state=0)
        >>> for chunk in np.array_split(X, 3):
        ...     model = model.partial_fit(chunk)
        >>> model.n_iter_, model.t_
        (3, 3)
        >>> model.k_curve_
        [4, 4, 4]
        """
        with _restore_on_error(self):
            first_call = not hasattr(self, "_trainer")
            if not first_call:
                # scikit-learn validates the parameters only on the first call.
                self._validate_params()
            X = self._validate_training_input(X, reset=first_call)
            k = self._training_k()
            if first_call:
                random_state = check_random_state(self.random_state)
                trainer = self._new_trainer(X, random_state)
            else:
                random_state = _copy_random_state(self._random_state)
                trainer = self._continued_trainer(X.dtype, keep_optimizer=True)
            batch_size = self._batch_size(X.shape[0])
            loss, fired = self._run_epoch(trainer, X, k, batch_size, random_state)
            self._commit_trainer(trainer, random_state)
            if first_call:
                self._start_history()
            self._append_epoch(loss, k, fired / X.shape[0])
        return self

    def _start_history(self):
        """Set the per-epoch attributes of a model that has run no epoch yet."""
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.k_curve_ = []
        self.validation_scores_ = None
        self.best_validation_score_ = None
        self.best_loss_ = None

    def _append_epoch(self, loss, k, frequency):
        """Add one :meth:`partial_fit` pass to the per-epoch attributes."""
        self.n_iter_ += 1
        self.loss_curve_ = [*self.loss_curve_, loss]
        self.k_curve_ = [*self.k_curve_, k]
        self._store_frequency(frequency)
        if self.validation_scores_ is None:
            previous = self.best_loss_
            self.best_loss_ = loss if previous is None else min(previous, loss)

    # ------------------------------------------------------------------
    # Encoding and decoding
    # ------------------------------------------------------------------

    def _fitted_encoder(self, dtype):
        return _Encoder(
            self.encoder_weights_.astype(dtype, copy=False),
            self.encoder_bias_.astype(dtype, copy=False),
            self.pre_bias_.astype(dtype, copy=False),
            self.components_.astype(dtype, copy=False),
            self.activation,
        )

    def _transform_k(self):
        value = self.k if self.transform_k is None else self.transform_k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._effective_k(value, "transform_k")

    def fit_transform(self, X, y=None, **fit_params):
        """Fit the model to X and return its codes.

        Equivalent to ``fit(X).transform(X)``, but an output container that
        cannot hold the codes raises before any training.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored.
        **fit_params : dict
            Passed to :meth:`fit`.

        Returns
        -------
        codes : scipy.sparse.csr_matrix or ndarray of shape (n_samples, n_components)
            As returned by :meth:`transform`.
        """
        self._validate_params()
        self._check_output_container()
        return super().fit_transform(X, y, **fit_params)

    def transform(self, X):
        """Encode X as sparse codes with at most ``transform_k`` nonzeros per row.

        Rows are encoded in chunks, so the extra memory is bounded by a chunk
        of ``n_components`` pre-activations and the CSR result. Input columns
        that are zero in every row of a chunk only shift the pre-activations
        by a constant, so the encoder product leaves them out when that saves
        time, as it does for images with blank borders.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : scipy.sparse.csr_matrix or ndarray of shape (n_samples, n_components)
            Canonical CSR matrix (sorted indices, no explicit zeros) in the
            float dtype of X, or a dense array when ``sparse_output=False``.

        Raises
        ------
        ValueError
            If X is not finite, or its codes overflow the float dtype of X.

        Examples
        --------
        >>> from sklearn.datasets import load_digits
        >>> from sklearn_ksparse import KSparseAutoencoder
        >>> X = load_digits().data[:300] / 16
        >>> model = KSparseAutoencoder(n_components=32, k=4, max_iter=5, random_state=0)
        >>> codes = model.fit(X).transform(X)
        >>> codes.shape, codes.format
        ((300, 32), 'csr')
        >>> int(codes.getnnz(axis=1).max())
        4

        ``transform_k`` keeps more units when encoding than in training:

        >>> codes = model.set_params(transform_k=12).transform(X)
        >>> int(codes.getnnz(axis=1).max())
        12
        """
        check_is_fitted(self)
        # Parameters may have changed through set_params since fit.
        self._validate_params()
        self._check_fitted_n_components("encode")
        self._check_output_container()
        X = _validate_numeric_data(self, X, reset=False)
        if sp.issparse(X):
            X = X.tocsr()
        encoder = self._fitted_encoder(X.dtype)
        least_squares = self.transform_algorithm == "least_squares"
        # An overflow raises the ValueError below instead of a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            codes = encoder.encode(X, self._transform_k(), least_squares)
        if not np.isfinite(codes.data).all():
            raise _overflow_error("Encoding", X)
        return codes if self.sparse_output else codes.toarray()

    def inverse_transform(self, X):
        """Map codes back to the input space: ``X @ components_ + pre_bias_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_components)
            Codes, sparse or dense, for example from :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            Reconstructions, in the float dtype of the codes.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from sklearn_ksparse import KSparseAutoencoder
        >>> X = load_digits().data[:300] / 16
        >>> model = KSparseAutoencoder(n_components=32, k=4, max_iter=5, random_state=0)
        >>> codes = model.fit(X).transform(X)
        >>> X_hat = model.inverse_transform(codes)
        >>> X_hat.shape
        (300, 64)
        >>> bool(np.allclose(X_hat, codes @ model.components_ + model.pre_bias_))
        True
        """
        check_is_fitted(self)
        # Parameters may have changed through set_params since fit.
        self._validate_params()
        self._check_fitted_n_components("decode")
        X = _check_numeric_dtype(X)
        codes = check_array(
            X,
            accept_sparse=_ACCEPTED_SPARSE,
            dtype=_FLOAT_DTYPES,
            estimator=self,
            input_name="X",
        )
        n_components = self.components_.shape[0]
        if codes.shape[1] != n_components:
            raise ValueError(
                f"X has {codes.shape[1]} columns, but KSparseAutoencoder has "
                f"{n_components} components; inverse_transform expects codes of "
                f"shape (n_samples, {n_components}) such as transform returns."
            )
        if sp.issparse(codes):
            codes = codes.tocsr()
        components = self.components_.astype(codes.dtype, copy=False)
        # An overflow raises the ValueError below instead of a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            reconstruction = np.asarray(codes @ components)
            reconstruction += self.pre_bias_.astype(codes.dtype, copy=False)
        if not np.isfinite(reconstruction).all():
            fix = "Scale the codes down"
            if codes.dtype == np.float32:
                fix = "Pass the codes as float64"
            raise _overflow_error("Decoding", codes, fix=fix)
        return reconstruction

    def score(self, X, y=None):
        """Return the explained variance of the reconstruction of X.

        The score is ``1 - ||X - X_hat||^2 / ||X - mean(X)||^2`` with
        ``X_hat = inverse_transform(transform(X))``, so higher is better and
        :class:`~sklearn.model_selection.GridSearchCV` can compare values of
        ``k`` without labels. Constant X scores 1.0 when reconstructed exactly
        and 0.0 otherwise. X counts as constant when its variance is no larger
        than the rounding error of its mean.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Data to reconstruct.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Explained variance.

        Raises
        ------
        ValueError
            If X is not finite, or a sum of squares overflows float64.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import load_digits
        >>> from sklearn_ksparse import KSparseAutoencoder
        >>> X = load_digits().data[:300] / 16
        >>> model = KSparseAutoencoder(n_components=32, k=4, max_iter=5, random_state=0)
        >>> score = model.fit(X).score(X)
        >>> X_hat = model.inverse_transform(model.transform(X))
        >>> residual = np.sum((X - X_hat) ** 2)
        >>> bool(np.isclose(score, 1 - residual / np.sum((X - X.mean(axis=0)) ** 2)))
        True
        """
        check_is_fitted(self)
        # Parameters may have changed through set_params since fit.
        self._validate_params()
        self._check_fitted_n_components("score")
        X = _validate_numeric_data(self, X, reset=False)
        if sp.issparse(X):
            X = X.tocsr()
        encoder = self._fitted_encoder(X.dtype)
        least_squares = self.transform_algorithm == "least_squares"
        with np.errstate(over="ignore", invalid="ignore"):
            score = _explained_variance(X, encoder, self._transform_k(), least_squares)
        if np.isnan(score):
            raise _overflow_error("Scoring", X)
        return score

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# Larger chunks encode no faster, so memory stays at this bound. Encoding 10,000
# MNIST rows with 2048 units took 429, 410 and 416 ms of CPU time with 32 MiB,
# 128 MiB and 1 GiB chunks (NumPy 2.4, one OpenBLAS thread, AMD EPYC).
_MAX_CHUNK_BYTES = 64 * 2**20
# Sparse input is densified one chunk at a time. This smaller bound keeps the
# dense chunk far below the size of the whole input made dense.
_MAX_SPARSE_CHUNK_BYTES = 8 * 2**20
# Chunks encoded in parallel keep at least this many rows, because the matrix
# product of a smaller chunk makes poor use of the BLAS kernel.
_MIN_PARALLEL_CHUNK_ROWS = 256


class _Encoder:
    """Fitted weights of one dtype, with chunked encoding and reconstruction."""

    def __init__(self, encoder_weights, encoder_bias, pre_bias, components, activation):
        self.encoder_weights = encoder_weights
        self.encoder_bias = encoder_bias
        self.pre_bias = pre_bias
        self.components = components
        self.activation = activation

    def chunks(self, n_samples, gathered_per_row=0, sparse_input=False, n_workers=1):
        """Return row slices that fit the working memory.

        ``gathered_per_row`` counts the extra elements a row needs, such as the
        ``k * n_features`` atoms that the least-squares refit gathers. With
        ``n_workers`` chunks in progress at once, each gets that share of the
        memory, and the rows are cut into at least two chunks per worker (of
        at least ``_MIN_PARALLEL_CHUNK_ROWS`` rows) so that the workers finish
        together.
        """
        n_components, n_features = self.components.shape
        row_elements = 4 * n_components + 2 * n_features + gathered_per_row
        row_bytes = row_elements * self.components.itemsize
        # scikit-learn's working_memory setting is in MiB
        limit = _MAX_SPARSE_CHUNK_BYTES if sparse_input else _MAX_CHUNK_BYTES
        budget = min(get_config()["working_memory"] * 2**20, limit) / n_workers
        chunk_rows = min(max(int(budget // row_bytes), 1), max(n_samples, 1))
        if n_workers > 1:
            balanced_rows = max(-(-n_samples // (2 * n_workers)), 1)
            chunk_rows = min(chunk_rows, max(balanced_rows, _MIN_PARALLEL_CHUNK_ROWS))
        return gen_batches(n_samples, chunk_rows)

    def encode_chunk(self, X, k, least_squares):
        """Return the kept units and code values of the dense rows X."""
        if least_squares:
            centered, pre_activations = encode_pre_activations(
                X, self.encoder_weights, self.encoder_bias, self.pre_bias
            )
            indices, _ = select_topk(pre_activations, k)
            return indices, _least_squares_values(centered, self.components, indices)
        pre_activations = encoding_pre_activations(
            X, self.encoder_weights, self.encoder_bias, self.pre_bias
        )
        indices, kept = select_topk(pre_activations, k)
        return indices, apply_activation(kept, self.activation)

    def encode(self, X, k, least_squares=False):
        """Return canonical CSR codes of X, assembled chunk by chunk.

        The CSR arrays are allocated once for k entries per row and trimmed at
        the end, so the extra memory is the pre-activations of the chunks in
        progress.
        """
        n_samples = X.shape[0]
        n_components = self.components.shape[0]
        builder = CSRBuilder(n_samples, n_components, k, self.components.dtype)
        for indices, values in self._encoded_chunks(X, k, least_squares):
            builder.append(indices, values)
        return builder.finish()

    def _encoded_chunks(self, X, k, least_squares):
        """Yield the kept units and values of each chunk of rows X, in order.

        With several BLAS threads, that many worker threads encode chunks at
        once, each with one BLAS thread. The top-k selection then runs in
        parallel too, not only the matrix product.
        """
        n_samples, n_features = X.shape
        dtype = self.components.dtype
        gathered_per_row = k * n_features if least_squares else 0
        n_workers = default_n_threads()
        slices = list(
            self.chunks(n_samples, gathered_per_row, sp.issparse(X), n_workers)
        )
        if n_workers > 1 and len(slices) > 1:
            with single_blas_thread():
                # Outside the main thread the limit may not apply, and then
                # the chunks run in order.
                if default_n_threads() == 1:
                    yield from self._encode_in_parallel(
                        X, slices, k, least_squares, n_workers
                    )
                    return
        for rows in slices:
            batch = dense_rows(X, rows, dtype)
            yield self.encode_chunk(batch, k, least_squares)

    def _encode_in_parallel(self, X, slices, k, least_squares, n_workers):
        """Encode the row ``slices`` of X on ``n_workers`` threads, in order.

        One chunk more than there are workers is submitted, so that every
        worker stays busy while the caller consumes a finished chunk.
        """
        dtype = self.components.dtype

        def encode_rows(rows):
            batch = dense_rows(X, rows, dtype)
            return self.encode_chunk(batch, k, least_squares)

        encode_rows = in_caller_error_state(encode_rows)
        executor = get_executor(n_workers)
        pending = deque()
        for rows in slices:
            pending.append(executor.submit(encode_rows, rows))
            if len(pending) > n_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def reconstruct_chunk(self, X, k, least_squares):
        indices, values = self.encode_chunk(X, k, least_squares)
        codes = SparseCodes(indices, values, self.components.shape[0])
        reconstruction = codes.decode(self.components)
        reconstruction += self.pre_bias
        return reconstruction


def _least_squares_values(centered, components, indices):
    """Refit the code values on the selected atoms by batched least squares.

    For each row, solves ``min_c ||centered - c @ atoms||^2`` over the atoms
    chosen by the encoder, through the normal equations with a tiny ridge term
    that keeps duplicated atoms solvable.
    """
    atoms = np.take(components, indices, axis=0)
    gram = np.matmul(atoms, atoms.transpose(0, 2, 1))
    rhs = np.matmul(atoms, centered[:, :, None])
    k = indices.shape[1]
    trace = np.trace(gram, axis1=1, axis2=2)
    ridge = (1e-6 * np.maximum(trace, 1e-12) / k).astype(gram.dtype)
    gram[:, np.arange(k), np.arange(k)] += ridge[:, None]
    return np.linalg.solve(gram, rhs)[:, :, 0]


def _column_mean(X):
    """Return the float64 mean of the columns of a dense array or CSR matrix.

    The sums run in float64 for float32 input too. SciPy 1.17's
    ``mean(dtype=np.float64)`` still sums float32 data in float32.
    """
    if sp.issparse(X):
        sums = np.bincount(X.indices, weights=X.data, minlength=X.shape[1])
        return sums / X.shape[0]
    return X.mean(axis=0, dtype=np.float64)


def _explained_variance(X, encoder, k, least_squares=False):
    """Compute ``1 - ||X - X_hat||^2 / ||X - mean(X)||^2`` chunk by chunk.

    X counts as constant when ``||X - mean(X)||^2`` is no larger than the
    rounding error of the float64 mean, at most ``(n_samples * eps)^2 *
    ||X||^2``. Dividing by that rounding error would turn a tiny residual into
    a score of -1e20. The sums are scaled, so data near the float64 limits
    neither underflows nor overflows. Returns NaN when X_hat is not finite.
    """
    mean = _column_mean(X)
    residual = _ScaledSumOfSquares()
    total = _ScaledSumOfSquares()
    squares = _ScaledSumOfSquares()
    for rows in encoder.chunks(X.shape[0], sparse_input=sp.issparse(X)):
        batch = dense_rows(X, rows, encoder.components.dtype)
        reconstruction = encoder.reconstruct_chunk(batch, k, least_squares)
        residual.add(batch - reconstruction)
        total.add(batch - mean)
        squares.add(batch)
    if not (residual.is_finite and total.is_finite and squares.is_finite):
        return np.nan
    rounding_floor = (X.shape[0] * np.finfo(np.float64).eps) ** 2
    if total.ssq == 0 or total.ratio(squares) <= rounding_floor:
        return 1.0 if residual.ssq == 0 else 0.0
    return 1.0 - residual.ratio(total)


class _ScaledSumOfSquares:
    """Sum of squares stored as ``scale**2 * ssq``, as LAPACK's ``dnrm2`` does.

    In float64, squares of values below about 1e-154 lose precision and then
    underflow to zero, and squares above about 1e154 overflow. Dividing by the
    largest magnitude seen so far keeps every square in range.
    """

    def __init__(self):
        self.scale = 0.0
        self.ssq = 0.0
        self.is_finite = True

    def add(self, values):
        """Add the squares of the entries of ``values``."""
        largest = float(np.max(np.abs(values), initial=0.0))
        if not math.isfinite(largest):
            self.is_finite = False
            return
        if largest == 0:
            return
        if largest > self.scale:
            shrink = self.scale / largest
            self.ssq *= shrink * shrink
            self.scale = largest
        scaled = values / np.float64(self.scale)
        self.ssq += float(np.sum(np.square(scaled)))

    def ratio(self, other):
        """Return this sum divided by ``other``, which must be nonzero."""
        scale_ratio = self.scale / other.scale
        return scale_ratio * scale_ratio * (self.ssq / other.ssq)


class _FitHistory:
    """Per-epoch losses and validation scores of a fit, with the stopping rule."""

    def __init__(self, tol, n_iter_no_change):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.losses = []
        self.ks = []
        self.scores = []
        self.frequency = None
        self.best_loss = None
        self.best_score = None
        self.best_trainer = None
        self.best_frequency = None
        self.no_improvement_count = 0
        self.converged = False

    def record(self, loss, k, frequency, score):
        self.losses.append(loss)
        self.ks.append(k)
        self.frequency = frequency
        if score is not None:
            self.scores.append(score)

    def should_stop(self, trainer, after_schedule):
        """Update the best values and return whether training should stop."""
        if after_schedule:
            self.best_loss = None
            self.best_score = None
            self.no_improvement_count = 0
        if self.scores:
            improved = self._update_best_score(trainer)
        else:
            improved = self._update_best_loss()
        self.no_improvement_count = 0 if improved else self.no_improvement_count + 1
        self.converged = self.no_improvement_count >= self.n_iter_no_change
        return self.converged

    def _update_best_loss(self):
        loss = self.losses[-1]
        if self.best_loss is None:
            self.best_loss = loss
            return True
        improved = loss < self.best_loss - self.tol * abs(self.best_loss)
        self.best_loss = min(self.best_loss, loss)
        return improved

    def _update_best_score(self, trainer):
        score = self.scores[-1]
        if self.best_score is not None:
            improved = score > self.best_score + self.tol * abs(self.best_score)
        else:
            improved = True
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            # The optimizer state goes with the weights, so that partial_fit
            # after early stopping continues from the restored epoch.
            self.best_trainer = trainer.copy()
            self.best_frequency = self.frequency
        return improved


class _KSchedule:
    """Linear decrease of the number of active units over the first epochs.

    Epoch 0 uses ``start`` and epoch ``n_decay`` and later use ``k``.
    """

    def __init__(self, start, k, n_decay):
        self.start = start
        self.k = k
        self.n_decay = n_decay

    def k_at(self, epoch):
        """Return the number of active units of ``epoch`` (0-based)."""
        if epoch >= self.n_decay:
            return self.k
        fraction = epoch / self.n_decay
        return int(round(self.start + (self.k - self.start) * fraction))


def _copy_random_state(random_state):
    clone = np.random.RandomState()
    clone.set_state(random_state.get_state())
    return clone
