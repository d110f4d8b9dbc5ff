"""A PyTorch CPU top-k autoencoder with the model and optimizer of sklearn-ksparse.

``bench_speed.py`` times it next to ``KSparseAutoencoder``. It is written the way
a PyTorch user would write the model: top-k with ``torch.topk``, codes scattered
into a dense tensor, dense products everywhere and gradients from autograd. The
model is the estimator's with ``initial_k=None``. It has a pre-encoder bias,
ReLU on the kept units, an untied encoder, unit-norm decoder atoms and the AuxK
loss on dead units. The atoms' gradient is projected onto their tangent space
before each step and the atoms are rescaled after it, as in the estimator. It
trains with ``torch.optim.Adam`` and the same hyperparameters, from weights the
caller passes in.
"""

import numpy as np
import torch


class TorchTopKAutoencoder:
    """Top-k autoencoder trained with autograd and ``torch.optim.Adam``.

    Parameters
    ----------
    params : dict of ndarray
        ``components``, ``encoder_weights``, ``encoder_bias`` and ``pre_bias``,
        copied into float32 tensors.
    k : int
        Number of units kept per row.
    auxk_k : int
        Number of dead units that reconstruct the error in the AuxK loss.
    auxk_coef : float
        Weight of the AuxK loss.
    dead_after : int
        A unit counts as dead after this many samples without firing.
    learning_rate : float
        Adam's step size. The moment decay rates and epsilon keep their
        PyTorch defaults (0.9, 0.999, 1e-8), which equal the estimator's.
        PyTorch adds epsilon to the bias-corrected root of the second moment,
        and the estimator adds it before the correction, as scikit-learn's MLP
        does. The two steps differ only while that root is near epsilon.
    """

    def __init__(self, params, k, auxk_k, auxk_coef, dead_after, learning_rate):
        def tensor(name):
            value = np.array(params[name], dtype=np.float32)
            return torch.from_numpy(value).requires_grad_(True)

        self.components = tensor("components")
        self.encoder_weights = tensor("encoder_weights")
        self.encoder_bias = tensor("encoder_bias")
        self.pre_bias = tensor("pre_bias")
        self.k = k
        self.auxk_k = auxk_k
        self.auxk_coef = auxk_coef
        self.dead_after = dead_after
        n_components = self.components.shape[0]
        self.samples_since_fired = torch.zeros(n_components, dtype=torch.int64)
        self.optimizer = torch.optim.Adam(
            [self.components, self.encoder_weights, self.encoder_bias, self.pre_bias],
            lr=learning_rate,
        )

    def _loss(self, X):
        pre_activations = (X - self.pre_bias) @ self.encoder_weights.T
        pre_activations = pre_activations + self.encoder_bias
        values, indices = torch.topk(pre_activations, self.k, dim=1, sorted=False)
        codes = torch.zeros_like(pre_activations).scatter(1, indices, values.relu())
        reconstruction = codes @ self.components + self.pre_bias
        error = X - reconstruction
        n_samples = X.shape[0]
        loss = 0.5 * error.pow(2).sum() / n_samples
        fired = torch.zeros_like(self.samples_since_fired, dtype=torch.bool)
        fired[indices[values > 0]] = True
        aux_loss = self._auxiliary_loss(pre_activations, error.detach())
        if aux_loss is not None:
            loss = loss + aux_loss
        return loss, fired

    def _auxiliary_loss(self, pre_activations, error):
        dead = self.samples_since_fired >= self.dead_after
        n_dead = int(dead.sum())
        if self.auxk_coef == 0 or n_dead == 0:
            return None
        masked = pre_activations.masked_fill(~dead, float("-inf"))
        values, indices = torch.topk(
            masked, min(self.auxk_k, n_dead), dim=1, sorted=False
        )
        codes = torch.zeros_like(pre_activations).scatter(1, indices, values.relu())
        aux_error = error - codes @ self.components
        return self.auxk_coef * 0.5 * aux_error.pow(2).sum() / error.shape[0]

    def train_step(self, X):
        """Take one Adam step on the float32 tensor ``X``; return the loss."""
        self.optimizer.zero_grad(set_to_none=False)
        loss, fired = self._loss(X)
        loss.backward()
        with torch.no_grad():
            grad = self.components.grad
            grad -= (grad * self.components).sum(1, keepdim=True) * self.components
            self.optimizer.step()
            self.components /= self.components.norm(dim=1, keepdim=True)
        self.samples_since_fired += X.shape[0]
        self.samples_since_fired[fired] = 0
        return float(loss.detach())

    def fit(self, X, n_epochs, batch_size, seed):
        """Train for ``n_epochs`` passes over the float32 array ``X``."""
        X = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        generator = torch.Generator().manual_seed(seed)
        n_samples = X.shape[0]
        for _ in range(n_epochs):
            order = torch.randperm(n_samples, generator=generator)
            for start in range(0, n_samples, batch_size):
                rows = order[start : start + batch_size].sort().values
                self.train_step(X[rows])
        return self
