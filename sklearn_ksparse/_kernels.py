"""Forward and backward passes of the top-k autoencoder on one minibatch.

Only the encoder's forward product is a dense matrix product. Everything after
the top-k selection touches the k kept units of each row: the decoder gathers k
atoms per row, and the weight gradients are products with sparse matrices of k
nonzeros per row.
"""

import numpy as np
import scipy.sparse as sp

from ._topk import apply_activation, select_topk


def encode_pre_activations(X, encoder_weights, encoder_bias, pre_bias):
    """Compute ``(X - pre_bias) @ encoder_weights.T + encoder_bias``.

    Returns the centred input too, because the encoder gradient needs it.
    """
    centered = X - pre_bias
    pre_activations = centered @ encoder_weights.T
    pre_activations += encoder_bias
    return centered, pre_activations


def decode_selected(atoms, code_values):
    """Sum the gathered atoms ``(n, k, d)`` weighted by ``code_values`` ``(n, k)``."""
    return np.matmul(code_values[:, None, :], atoms)[:, 0, :]


class SparseForward:
    """Top-k codes of one minibatch and the atoms they select.

    Parameters
    ----------
    pre_activations : ndarray of shape (n_samples, n_components)
    k : int
        Number of units kept per row.
    activation : {"relu", "identity"}
    components : ndarray of shape (n_components, n_features)
        Decoder atoms.
    units : ndarray of shape (n_columns,), default=None
        Unit of each column of ``pre_activations`` when it holds a subset of the
        layer (the dead units, for the auxiliary loss); None means all units.
    """

    def __init__(self, pre_activations, k, activation, components, units=None):
        self.indices, kept = select_topk(pre_activations, k)
        if units is not None:
            self.indices = units[self.indices]
        self.activation = activation
        self.code_values = apply_activation(kept, activation)
        self.atoms = np.take(components, self.indices, axis=0)
        self.reconstruction = decode_selected(self.atoms, self.code_values)

    def fired_mask(self):
        """Return a boolean mask of the selected units with a nonzero code."""
        return self.code_values != 0

    def activation_derivative(self, code_grad):
        """Multiply ``code_grad`` in place by the activation's derivative."""
        if self.activation == "relu":
            code_grad *= self.code_values > 0
        return code_grad


def _rows_as_csr(indices, values, n_columns):
    """Wrap per-row ``indices`` and ``values`` of equal width as a CSR matrix."""
    n_rows, width = indices.shape
    indptr = np.arange(0, n_rows * width + 1, width)
    return sp.csr_matrix(
        (values.ravel(), indices.ravel(), indptr), shape=(n_rows, n_columns)
    )


def backpropagate(
    forward, residual, centered, encoder_weights, gradients, include_pre_bias
):
    """Add the gradients of ``0.5 * ||residual||^2`` to ``gradients`` in place.

    Parameters
    ----------
    forward : SparseForward
        The selected units whose reconstruction produced ``residual``.
    residual : ndarray of shape (n_samples, n_features)
        Reconstruction minus target, already scaled by the loss weight.
    centered : ndarray of shape (n_samples, n_features)
        Encoder input ``X - pre_bias``.
    encoder_weights : ndarray of shape (n_components, n_features)
    gradients : dict of ndarray
        Keys ``components``, ``encoder_weights``, ``encoder_bias`` and
        ``pre_bias``, accumulated in place.
    include_pre_bias : bool
        Whether the reconstruction adds ``pre_bias``, so its decoder gradient
        counts too (false for the auxiliary reconstruction of the residual).
    """
    n_components = gradients["encoder_bias"].shape[0]
    code_grad = np.matmul(forward.atoms, residual[:, :, None])[:, :, 0]
    forward.activation_derivative(code_grad)

    codes = _rows_as_csr(forward.indices, forward.code_values, n_components)
    gradients["components"] += codes.T @ residual
    code_grads = _rows_as_csr(forward.indices, code_grad, n_components)
    gradients["encoder_weights"] += code_grads.T @ centered

    bias_grad = np.bincount(
        forward.indices.ravel(), weights=code_grad.ravel(), minlength=n_components
    ).astype(residual.dtype, copy=False)
    gradients["encoder_bias"] += bias_grad
    # The pre-activations depend on -pre_bias through the encoder weights.
    gradients["pre_bias"] -= bias_grad @ encoder_weights
    if include_pre_bias:
        gradients["pre_bias"] += residual.sum(axis=0)
