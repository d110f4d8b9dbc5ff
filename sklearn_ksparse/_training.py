"""Minibatch training of the top-k autoencoder: initialisation, steps and epochs."""

import numpy as np
import scipy.sparse as sp

from ._kernels import (
    DenseCodes,
    backpropagate,
    concatenate_codes,
    encode_pre_activations,
    select_codes,
)
from ._optimizers import AdamOptimizer, SGDOptimizer, run_tasks


class TrainingDivergedError(ValueError):
    """Raised when the loss or the weights stop being finite during training."""


def dense_rows(X, rows, dtype):
    """Return ``X[rows]`` as a C-contiguous dense array of ``dtype``.

    Only the selected rows are densified, so sparse input never becomes a dense
    copy of the whole matrix.
    """
    batch = X[rows]
    if sp.issparse(batch):
        batch = batch.toarray()
    return np.ascontiguousarray(batch, dtype=dtype)


def geometric_median(X, max_iter=100, tol=1e-7):
    """Compute the geometric median of the rows of ``X`` by Weiszfeld's iteration."""
    median = X.mean(axis=0)
    for _ in range(max_iter):
        distances = np.linalg.norm(X - median, axis=1)
        largest = distances.max()
        if largest == 0:
            # Every row equals the estimate, which is then the median.
            break
        # A row at the estimate would get an infinite weight; flooring its
        # distance relative to the spread keeps the weighted sum finite.
        floor = np.finfo(X.dtype).eps * largest
        weights = 1.0 / np.maximum(distances, floor)
        updated = weights @ X / weights.sum()
        shift = np.linalg.norm(updated - median)
        median = updated
        if shift <= tol * max(np.linalg.norm(median), 1.0):
            break
    return median


def initial_pre_bias(X, rule, dtype, random_state, max_rows=4096):
    """Compute the starting ``pre_bias`` from the data by ``rule``.

    ``"mean"`` uses every row; ``"geometric_median"`` uses at most ``max_rows``
    rows drawn at random; ``"zeros"`` ignores the data.
    """
    n_samples, n_features = X.shape
    if rule == "zeros":
        return np.zeros(n_features, dtype=dtype)
    if rule == "mean":
        return np.asarray(X.mean(axis=0), dtype=np.float64).ravel().astype(dtype)
    rows = np.arange(n_samples)
    if n_samples > max_rows:
        rows = np.sort(random_state.choice(n_samples, max_rows, replace=False))
    sample = dense_rows(X, rows, np.float64)
    return geometric_median(sample).astype(dtype)


def initial_parameters(n_components, pre_bias, tied_weights, random_state):
    """Draw unit-norm decoder atoms and set the encoder to their transpose.

    The encoder weight rows equal the decoder atoms, so the starting encoder is
    the decoder's transpose as recommended by Gao et al. (2024). The encoder
    bias starts at zero.
    """
    dtype = pre_bias.dtype
    n_features = pre_bias.shape[0]
    components = random_state.standard_normal((n_components, n_features))
    components /= np.linalg.norm(components, axis=1, keepdims=True)
    params = {
        "components": components.astype(dtype),
        "encoder_bias": np.zeros(n_components, dtype=dtype),
        "pre_bias": pre_bias.copy(),
    }
    if not tied_weights:
        params["encoder_weights"] = params["components"].copy()
    return params


def make_optimizer(params, solver, hyperparams):
    """Build the optimizer named by ``solver`` over ``params``."""
    if solver == "adam":
        return AdamOptimizer(
            params,
            hyperparams["learning_rate_init"],
            hyperparams["beta_1"],
            hyperparams["beta_2"],
            hyperparams["epsilon"],
        )
    return SGDOptimizer(
        params,
        hyperparams["learning_rate_init"],
        hyperparams["momentum"],
        hyperparams["nesterovs_momentum"],
    )


class TopKTrainer:
    """Weights, optimizer state and dead-unit counters of a training run.

    Parameters
    ----------
    params : dict of ndarray
        ``components`` (decoder atoms), ``encoder_weights`` (absent when the
        weights are tied), ``encoder_bias`` and ``pre_bias``.
    optimizer : AdamOptimizer or SGDOptimizer
    activation : {"relu", "identity"}
    normalize_components : bool
        Keep decoder atoms at unit norm.
    auxk_coef : float
        Weight of the auxiliary loss; 0 disables it.
    auxk_k : int
        Number of dead units that reconstruct the residual in the auxiliary loss.
    dead_after : int
        A unit counts as dead after this many training samples without firing.
    """

    PARAM_ORDER = ("components", "encoder_weights", "encoder_bias", "pre_bias")

    def __init__(
        self, params, optimizer, activation, normalize_components, auxk_coef,
        auxk_k, dead_after,
    ):  # fmt: skip
        self.params = params
        self.optimizer = optimizer
        self.activation = activation
        self.normalize_components = normalize_components
        self.auxk_coef = float(auxk_coef)
        self.auxk_k = auxk_k
        self.dead_after = dead_after
        n_components = params["components"].shape[0]
        self.samples_since_fired = np.zeros(n_components, dtype=np.int64)
        self.n_steps = 0
        # None chooses the code layout by density; True or False forces it.
        self.dense = None
        # Threads that share the rows of a minibatch. With 1 the rows run in order.
        self.n_workers = 1

    @property
    def n_threads(self):
        """Number of threads of the optimizer, the BLAS thread count by default."""
        return getattr(self.optimizer, "n_threads", 1)

    @property
    def tied_weights(self):
        return "encoder_weights" not in self.params

    @property
    def encoder_weights(self):
        return self.params.get("encoder_weights", self.params["components"])

    def copy(self):
        """Return a deep copy whose arrays are writable in-memory ndarrays."""
        clone = object.__new__(TopKTrainer)
        clone.__dict__.update(self.__dict__)
        clone.params = {
            name: np.array(value, copy=True) for name, value in self.params.items()
        }
        clone.optimizer = _copy_optimizer(self.optimizer)
        clone.samples_since_fired = self.samples_since_fired.copy()
        return clone

    def dead_mask(self):
        """Return the units that have not fired for ``dead_after`` samples."""
        return self.samples_since_fired >= self.dead_after

    def train_step(self, X, k):
        """Take one optimizer step on the minibatch ``X`` with ``k`` kept units.

        Returns the minibatch's loss ``0.5 * mean(||x - x_hat||^2)`` and how
        many rows each unit fired in.
        """
        loss, gradients, codes = self.compute_gradients(X, k)
        self._apply_gradients(gradients)
        fired = self._count_fired(codes, self.samples_since_fired.shape[0])
        self.samples_since_fired += X.shape[0]
        self.samples_since_fired[fired > 0] = 0
        self.n_steps += 1
        return loss, fired

    def compute_gradients(self, X, k):
        """Return the loss, the loss gradients and the codes of the minibatch X.

        The gradients are those of the main loss plus the AuxK loss, one newly
        allocated array per parameter, before the unit-norm projection. With
        ``n_workers > 1`` the rows are split among that many threads up to the
        gradients of the kept units, and the weight gradients of the decoder
        and the encoder are computed concurrently.
        """
        n_samples = X.shape[0]
        dead_units = self._aux_units()
        parts = run_tasks(
            self._forward_rows,
            [(X[rows], k, n_samples, dead_units) for rows in self._row_parts(X)],
            self.n_workers,
        )
        centered, terms, code_gradients, squared_error = _merge_row_parts(parts)
        loss = 0.5 * squared_error / n_samples
        if not np.isfinite(loss):
            raise TrainingDivergedError(f"the training loss became {loss}")
        dtype = self.params["components"].dtype
        if squared_error > np.finfo(dtype).max:
            # The loss is summed in float64, but gradients this large would
            # overflow the weights' dtype in the backward pass.
            raise TrainingDivergedError(
                f"the training loss {loss:.3g} overflows the weights' {dtype}"
            )
        gradients = backpropagate(
            terms, centered, self.params, self.activation, code_gradients,
            n_workers=self.n_workers,
        )  # fmt: skip
        return loss, gradients, terms[0][0]

    def _row_parts(self, X):
        """Split the rows of X into ``n_workers`` slices of near-equal size."""
        n_samples = X.shape[0]
        n_parts = max(1, min(self.n_workers, n_samples))
        bounds = np.linspace(0, n_samples, n_parts + 1).astype(int)
        return [
            slice(start, stop)
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True)
        ]

    def _forward_rows(self, X, k, n_samples, dead_units):
        """Run the forward pass and the kept units' gradients on rows X.

        ``n_samples`` is the minibatch size that scales the loss. Returns the
        centred rows, the ``(codes, residual, includes_pre_bias)`` terms, the
        gradient of each term with respect to its pre-activations and the sum
        of squared errors.
        """
        params = self.params
        components = params["components"]
        centered, pre_activations = encode_pre_activations(
            X, self.encoder_weights, params["encoder_bias"], params["pre_bias"]
        )
        codes = select_codes(
            pre_activations, k, self.activation, components.shape[0],
            dense=self.dense,
        )  # fmt: skip
        residual = codes.decode(components)
        residual += params["pre_bias"]
        residual -= X
        flat_residual = residual.reshape(-1)
        # A float32 dot product would round the loss differently for each
        # split of the rows among threads.
        flat_residual = flat_residual.astype(np.float64, copy=False)
        squared_error = float(np.dot(flat_residual, flat_residual))
        residual *= 1.0 / n_samples
        terms = [(codes, residual, True)]
        if dead_units is not None:
            terms.append(
                self._auxiliary_term(pre_activations, residual, dead_units, n_samples)
            )
        code_gradients = [
            term_codes.unit_gradients(components, term_residual, self.activation)
            for term_codes, term_residual, _ in terms
        ]
        return centered, terms, code_gradients, squared_error

    @staticmethod
    def _count_fired(codes, n_components):
        """Return how many rows of the minibatch each unit was nonzero in."""
        if isinstance(codes, DenseCodes):
            return np.count_nonzero(codes.codes, axis=0)
        return np.bincount(codes.indices[codes.values != 0], minlength=n_components)

    def _aux_units(self):
        """Return the dead units that enter the AuxK term, or None if it is off."""
        if self.auxk_coef == 0:
            return None
        dead_units = np.flatnonzero(self.dead_mask())
        return dead_units if dead_units.size else None

    def _auxiliary_term(self, pre_activations, residual, dead_units, n_samples):
        """Build the AuxK term: dead units reconstruct the main residual.

        ``residual`` is ``(x_hat - x) / n_samples``. The top ``auxk_k`` dead
        units reconstruct the error ``x - x_hat`` without the pre-bias. The
        error is a constant here, so no gradient flows back into the main
        reconstruction.
        """
        n_components = pre_activations.shape[1]
        auxk_k = min(self.auxk_k, dead_units.size)
        codes = select_codes(
            pre_activations[:, dead_units], auxk_k, self.activation,
            n_components, units=dead_units, dense=self.dense,
        )  # fmt: skip
        # (aux_reconstruction - error) / n, with error = -residual * n
        aux_residual = codes.decode(self.params["components"])
        aux_residual *= 1.0 / n_samples
        aux_residual += residual
        aux_residual *= self.auxk_coef
        return codes, aux_residual, False

    def _apply_gradients(self, gradients):
        """Update the weights in place, keeping decoder atoms at unit norm.

        The projection of the atoms' gradient and the rescaling of the atoms
        run on each block of rows inside the optimizer's pass, while the block
        is in the CPU cache.
        """
        params = self.params
        names = [name for name in self.PARAM_ORDER if name in params]
        hooks = [(None, None)] * len(names)
        if self.normalize_components:
            hooks[names.index("components")] = (_project_rows, _normalize_block)
        self.optimizer.update_params(
            [params[name] for name in names],
            [gradients[name] for name in names],
            hooks,
        )

    def check_finite(self):
        """Raise ``TrainingDivergedError`` if any weight is NaN or infinite."""
        for name, value in self.params.items():
            if not np.isfinite(value).all():
                raise TrainingDivergedError(f"the {name} weights are no longer finite")

    def run_epoch(self, X, k, batch_size, shuffle, random_state):
        """Make one pass over the rows of ``X`` in minibatches.

        Returns the mean loss over the rows and the number of rows each unit
        fired in.
        """
        n_samples = X.shape[0]
        dtype = self.params["components"].dtype
        order = random_state.permutation(n_samples) if shuffle else None
        total_loss = 0.0
        fired = np.zeros(self.samples_since_fired.shape[0], dtype=np.int64)
        for start in range(0, n_samples, batch_size):
            stop = min(start + batch_size, n_samples)
            rows = slice(start, stop) if order is None else np.sort(order[start:stop])
            batch = dense_rows(X, rows, dtype)
            loss, batch_fired = self.train_step(batch, k)
            total_loss += loss * (stop - start)
            fired += batch_fired
        self.check_finite()
        return total_loss / n_samples, fired


def _merge_row_parts(parts):
    """Concatenate the forward passes of consecutive row slices."""
    if len(parts) == 1:
        return parts[0]
    centered = np.concatenate([part[0] for part in parts])
    terms = []
    code_gradients = []
    for index in range(len(parts[0][1])):
        part_terms = [part[1][index] for part in parts]
        codes = concatenate_codes([term[0] for term in part_terms])
        residual = np.concatenate([term[1] for term in part_terms])
        terms.append((codes, residual, part_terms[0][2]))
        code_gradients.append(np.concatenate([part[2][index] for part in parts]))
    squared_error = sum(part[3] for part in parts)
    return centered, terms, code_gradients, squared_error


def _project_rows(gradient, atoms):
    """Remove from each gradient row its component along the unit-norm atom."""
    parallel = np.einsum("ij,ij->i", gradient, atoms)
    gradient -= parallel[:, None] * atoms


def _normalize_block(atoms):
    """Scale each row of ``atoms`` to unit norm in place."""
    norms = np.einsum("ij,ij->i", atoms, atoms)
    np.sqrt(norms, out=norms)
    np.maximum(norms, np.finfo(atoms.dtype).tiny, out=norms)
    atoms /= norms[:, None]


def _copy_optimizer(optimizer):
    clone = object.__new__(type(optimizer))
    for name, value in optimizer.__dict__.items():
        if isinstance(value, list):
            value = [np.array(array, copy=True) for array in value]
        setattr(clone, name, value)
    return clone
