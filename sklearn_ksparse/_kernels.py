"""Forward and backward passes of the top-k autoencoder on one minibatch.

Only the encoder's forward product is always dense. After the top-k selection
the codes of a minibatch take one of two layouts, chosen by their density
``k / width``:

- ``SparseCodes`` stores k (unit, value) pairs per row. The decoder product and
  the weight gradients are CSR products that cost ``n * k * n_features``, and
  the gradient with respect to the kept units gathers only their atoms.
- ``DenseCodes`` stores an ``(n, width)`` array with zeros outside the kept
  units, so that every product is a BLAS matrix product over the ``width``
  columns. It wins once k is a large fraction of the width, because BLAS runs
  many times faster per operation than the sparse loops.

Every array keeps the dtype of the weights, so float32 training stays float32.
"""

import numpy as np
import scipy.sparse as sp

from ._optimizers import run_tasks
from ._topk import apply_activation, select_topk

# Codes with more than this fraction of kept units per row use the dense layout.
# Each product after the top-k costs the same CPU time in both layouts at
# k / width of about 1/11 to 1/8, for widths 512 and 2048. That was measured
# with one OpenBLAS 0.3.31 thread, NumPy 2.4, SciPy 1.17, AMD EPYC with AVX-512,
# float32, batch 256, 784 features. For example, at (512, 64) the sparse and
# dense layouts took 1.85 and 2.18 ms for the decoder product, 2.81 and 2.56 ms
# for the kept-unit gradients and 1.73 and 2.14 ms for a weight gradient.
# Training splits the rows of a minibatch among threads with one BLAS thread
# each, so both layouts use every core and the thread count does not move the
# crossover: whole steps on 2 threads took 9.5 (sparse) and 9.7 ms (dense) at
# (512, 64), and 35.9 and 34.6 ms at (2048, 256).
DENSE_MIN_FRACTION = 1 / 9

# Gathered atoms are processed in row chunks of about this many elements
# (1 MiB in float32), so that each chunk stays in the CPU cache while it is used.
_GATHER_CHUNK_ELEMENTS = 2**18

# Encoding skips the input columns that are zero in every row of a chunk when
# the product it saves outweighs gathering the other columns of the encoder
# weights: ``n_rows * n_zero >= _ZERO_COLUMN_GATHER_ROWS * n_used``. Gathering
# an element costs about as much as 64 multiply-adds of the product. Measured
# with NumPy 2.4, one OpenBLAS 0.3.31 thread, AMD EPYC with AVX-512, float32:
# in 512 MNIST rows 28% of the columns are zero. The product with 512 units
# then took 1.58 instead of 2.22 ms, and the gather took 0.12 ms.
_ZERO_COLUMN_GATHER_ROWS = 64


def encode_pre_activations(X, encoder_weights, encoder_bias, pre_bias):
    """Compute ``(X - pre_bias) @ encoder_weights.T + encoder_bias``.

    Returns the centred input too, because the encoder gradient needs it.
    """
    centered = X - pre_bias
    pre_activations = centered @ encoder_weights.T
    pre_activations += encoder_bias
    return centered, pre_activations


def encoding_pre_activations(X, encoder_weights, encoder_bias, pre_bias):
    """Compute ``(X - pre_bias) @ encoder_weights.T + encoder_bias``, skipping zeros.

    A column j of X that is zero in every row adds the same
    ``-pre_bias[j] * encoder_weights[:, j]`` to each row, so it joins the bias
    and the product runs over the other columns. Images with blank borders
    and one-hot or count features have many such columns in a chunk of rows.
    The result equals the full product up to the order of the sums.
    """
    n_rows = X.shape[0]
    used_columns = np.any(X, axis=0)
    n_used = int(np.count_nonzero(used_columns))
    n_zero = used_columns.size - n_used
    if n_rows * n_zero < _ZERO_COLUMN_GATHER_ROWS * n_used:
        return encode_pre_activations(X, encoder_weights, encoder_bias, pre_bias)[1]
    zero_columns = ~used_columns
    bias = encoder_bias - encoder_weights[:, zero_columns] @ pre_bias[zero_columns]
    centered = X[:, used_columns]
    centered -= pre_bias[used_columns]
    pre_activations = centered @ encoder_weights[:, used_columns].T
    pre_activations += bias
    return pre_activations


def rows_as_csr(indices, values, n_columns):
    """Wrap per-row ``indices`` and ``values`` of equal width as a CSR matrix.

    Columns may repeat within a row, and products then sum the repeated entries.
    """
    n_rows, width = indices.shape
    indptr = np.arange(0, n_rows * width + 1, width)
    return sp.csr_matrix(
        (values.ravel(), indices.ravel(), indptr), shape=(n_rows, n_columns)
    )


def use_dense_layout(k, width, dense=None):
    """Return whether codes with ``k`` of ``width`` units kept go dense.

    ``dense`` forces the layout when it is a bool. None compares ``k / width``
    with ``DENSE_MIN_FRACTION``.
    """
    if dense is not None:
        return bool(dense)
    return k > DENSE_MIN_FRACTION * width


class SparseCodes:
    """Codes of a minibatch as k (unit, value) pairs per row.

    Parameters
    ----------
    indices : ndarray of shape (n_samples, k)
        Unit of each kept entry.
    values : ndarray of shape (n_samples, k)
        Code values after the activation.
    n_components : int
        Number of units of the layer.
    """

    def __init__(self, indices, values, n_components):
        self.indices = indices
        self.values = values
        self.n_components = n_components

    def decode(self, components):
        """Return ``codes @ components`` as a dense array."""
        codes = rows_as_csr(self.indices, self.values, self.n_components)
        return np.asarray(codes @ components)

    def unit_gradients(self, components, residual, activation):
        """Return the loss gradient with respect to the kept pre-activations.

        Each entry is the dot product of the unit's atom with the row's
        residual, times the activation's derivative. Atoms are gathered a chunk
        of rows at a time.
        """
        n_samples, k = self.indices.shape
        gradients = np.empty((n_samples, k, 1), dtype=residual.dtype)
        chunk = max(1, _GATHER_CHUNK_ELEMENTS // (k * components.shape[1]))
        for start in range(0, n_samples, chunk):
            rows = slice(start, start + chunk)
            atoms = np.take(components, self.indices[rows], axis=0)
            np.matmul(atoms, residual[rows, :, None], out=gradients[rows])
        gradients = gradients[:, :, 0]
        if activation == "relu":
            gradients *= self.values > 0
        return gradients

    def matrix(self, values=None):
        """Return the codes, or ``values`` at the same positions, as CSR."""
        values = self.values if values is None else values
        return rows_as_csr(self.indices, values, self.n_components)

    def add_column_sums(self, values, out):
        """Add the sum of ``values`` over the rows to ``out`` at each unit."""
        np.add.at(out, self.indices.ravel(), values.ravel())


class DenseCodes:
    """Codes of a minibatch over a set of units, as a dense array.

    Parameters
    ----------
    codes : ndarray of shape (n_samples, width)
        Code values after the activation, zero outside the kept entries.
    kept_mask : ndarray of shape (n_samples, width), dtype bool
        True at the k kept entries of each row.
    units : ndarray of shape (width,) or None
        Unit of each column; None means all units in order.
    """

    def __init__(self, codes, kept_mask, units):
        self.codes = codes
        self.kept_mask = kept_mask
        self.units = units
        self._atoms = None

    @classmethod
    def from_pre_activations(cls, pre_activations, k, activation, units):
        """Build the codes that keep the k largest pre-activations of each row.

        The k-th largest value of each row comes from ``np.partition``, which
        NumPy runs faster than ``np.argpartition``, and the kept entries are
        those at or above it. Rows where ties at that value keep more than k
        entries go through ``select_topk``, so every row keeps exactly k.
        """
        width = pre_activations.shape[1]
        threshold = np.partition(pre_activations, width - k, axis=1)[:, width - k]
        kept_mask = pre_activations >= threshold[:, None]
        tied_rows = np.flatnonzero(np.count_nonzero(kept_mask, axis=1) != k)
        if tied_rows.size:
            indices, _ = select_topk(pre_activations[tied_rows], k)
            tied_mask = np.zeros((tied_rows.size, width), dtype=bool)
            np.put_along_axis(tied_mask, indices, True, axis=1)
            kept_mask[tied_rows] = tied_mask
        codes = np.where(kept_mask, pre_activations, 0).astype(
            pre_activations.dtype, copy=False
        )
        if activation == "relu":
            np.maximum(codes, 0, out=codes)
        return cls(codes, kept_mask, units)

    @classmethod
    def stack(cls, parts):
        """Return the codes of consecutive row slices as one ``DenseCodes``."""
        stacked = cls(
            np.concatenate([part.codes for part in parts]),
            np.concatenate([part.kept_mask for part in parts]),
            parts[0].units,
        )
        stacked._atoms = parts[0]._atoms
        return stacked

    def atoms(self, components):
        """Return the rows of ``components`` of the code's units."""
        if self.units is None:
            return components
        if self._atoms is None:
            self._atoms = np.take(components, self.units, axis=0)
        return self._atoms

    def decode(self, components):
        """Return ``codes @ components`` as a dense array."""
        return self.codes @ self.atoms(components)

    def unit_gradients(self, components, residual, activation):
        """Return the loss gradient with respect to the pre-activations.

        Entries outside the kept units are zero.
        """
        gradients = residual @ self.atoms(components).T
        if activation == "relu":
            gradients *= self.codes > 0
        else:
            gradients *= self.kept_mask
        return gradients

    def add_weight_gradient(self, values, inputs, out):
        """Add ``values.T @ inputs`` to the rows of ``out`` of the code's units."""
        product = values.T @ inputs
        if self.units is None:
            out += product
        else:
            out[self.units] += product

    def add_column_sums(self, values, out):
        """Add the sum of ``values`` over the rows to ``out`` at each unit."""
        sums = values.sum(axis=0)
        if self.units is None:
            out += sums
        else:
            out[self.units] += sums


def select_codes(pre_activations, k, activation, n_components, units=None, dense=None):
    """Keep the ``k`` largest pre-activations of each row as codes.

    Parameters
    ----------
    pre_activations : ndarray of shape (n_samples, width)
        Pre-activations of all units, or of ``units`` only.
    k : int
        Number of units kept per row.
    activation : {"relu", "identity"}
    n_components : int
        Number of units of the layer.
    units : ndarray of shape (width,), default=None
        Unit of each column of ``pre_activations``; None means all units.
    dense : bool, default=None
        Force the layout; None chooses it with ``use_dense_layout``.

    Returns
    -------
    codes : SparseCodes or DenseCodes
    """
    width = pre_activations.shape[1]
    if use_dense_layout(k, width, dense):
        return DenseCodes.from_pre_activations(pre_activations, k, activation, units)
    indices, kept_values = select_topk(pre_activations, k)
    values = apply_activation(kept_values, activation)
    if units is not None:
        indices = units[indices]
    return SparseCodes(indices, values, n_components)


def concatenate_codes(parts):
    """Concatenate the codes of consecutive row slices, which share one layout."""
    if isinstance(parts[0], DenseCodes):
        return DenseCodes.stack(parts)
    return SparseCodes(
        np.concatenate([part.indices for part in parts]),
        np.concatenate([part.values for part in parts]),
        parts[0].n_components,
    )


def weight_gradient(terms, shape, dtype):
    """Sum ``codes.T @ inputs`` over the ``(codes, values, inputs)`` terms.

    ``values`` replaces the code values at the same positions. The sparse terms
    are stacked into one CSR product. The first product that covers every unit
    becomes the gradient array, so no separate zero-filled array is needed, and
    the other terms add into its rows.
    """
    gradient = None
    sparse_terms = [term for term in terms if isinstance(term[0], SparseCodes)]
    if sparse_terms:
        matrices = [codes.matrix(values) for codes, values, _ in sparse_terms]
        inputs = [term_inputs for _, _, term_inputs in sparse_terms]
        if len(sparse_terms) > 1:
            matrices = [sp.vstack(matrices, format="csr")]
            inputs = [np.concatenate(inputs)]
        gradient = np.asarray(matrices[0].T @ inputs[0])
    for codes, values, term_inputs in terms:
        if isinstance(codes, SparseCodes):
            continue
        if gradient is None and codes.units is None:
            gradient = values.T @ term_inputs
            continue
        if gradient is None:
            gradient = np.zeros(shape, dtype=dtype)
        codes.add_weight_gradient(values, term_inputs, gradient)
    if gradient is None:
        gradient = np.zeros(shape, dtype=dtype)
    return gradient


def backpropagate(
    terms, centered, params, activation, code_gradients=None, n_workers=1
):
    """Return the gradients of a sum of squared reconstruction errors.

    Parameters
    ----------
    terms : list of (codes, residual, includes_pre_bias)
        One entry per reconstruction: its codes (``SparseCodes`` or
        ``DenseCodes``), the gradient of the loss with respect to the
        reconstruction (reconstruction minus target, scaled by the loss
        weight), and whether the reconstruction adds ``pre_bias``.
    centered : ndarray of shape (n_samples, n_features)
        Encoder input ``X - pre_bias``.
    params : dict of ndarray
        ``components``, ``encoder_bias``, ``pre_bias`` and, unless the weights
        are tied, ``encoder_weights``.
    activation : {"relu", "identity"}
    code_gradients : list of ndarray, default=None
        Gradient of each term with respect to its kept pre-activations, as
        returned by ``unit_gradients``. None computes them here.
    n_workers : int, default=1
        Threads for the weight gradients of the decoder and the encoder, which
        are computed concurrently when it is above 1.

    Returns
    -------
    gradients : dict of ndarray
        One array per entry of ``params``, newly allocated, in its dtype.
    """
    components = params["components"]
    dtype = components.dtype
    if code_gradients is None:
        code_gradients = [
            codes.unit_gradients(components, residual, activation)
            for codes, residual, _ in terms
        ]
    decoder_terms = [(codes, codes_values(codes), r) for codes, r, _ in terms]
    encoder_terms = [
        (codes, grads, centered)
        for (codes, _, _), grads in zip(terms, code_gradients, strict=True)
    ]
    gradients = {}
    tied = "encoder_weights" not in params
    # With tied weights the two gradients are still computed apart and then
    # added, so that the sums run in the same order whatever n_workers is.
    decoder_gradient, encoder_gradient = run_tasks(
        weight_gradient,
        [
            (decoder_terms, components.shape, dtype),
            (encoder_terms, components.shape, dtype),
        ],
        n_workers,
    )
    gradients["components"] = decoder_gradient
    if tied:
        decoder_gradient += encoder_gradient
    else:
        gradients["encoder_weights"] = encoder_gradient

    bias_gradient = np.zeros(components.shape[0], dtype=dtype)
    for (codes, _, _), grads in zip(terms, code_gradients, strict=True):
        codes.add_column_sums(grads, bias_gradient)
    gradients["encoder_bias"] = bias_gradient
    # The pre-activations depend on -pre_bias through the encoder weights.
    encoder_weights = params.get("encoder_weights", components)
    pre_bias_gradient = -(bias_gradient @ encoder_weights)
    for _, residual, includes_pre_bias in terms:
        if includes_pre_bias:
            pre_bias_gradient += residual.sum(axis=0)
    gradients["pre_bias"] = pre_bias_gradient
    return gradients


def codes_values(codes):
    """Return the code values in the layout's own shape."""
    if isinstance(codes, DenseCodes):
        return codes.codes
    return codes.values
