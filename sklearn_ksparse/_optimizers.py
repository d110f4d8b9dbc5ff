"""In-place stochastic optimizers over a list of NumPy parameter arrays.

Each optimizer updates the arrays it is given in place and overwrites the gradient
arrays as scratch space, so a step allocates no parameter-sized memory. Updates run
over blocks of ``_BLOCK_SIZE`` elements so that the dozen elementwise passes of a
step stay in the CPU cache instead of streaming every array from memory each time.
"""

import numpy as np

_BLOCK_SIZE = 65536


def _blocks(*arrays):
    """Yield aligned flat slices of equally shaped contiguous arrays."""
    flats = [array.reshape(-1) for array in arrays]
    size = flats[0].size
    for start in range(0, size, _BLOCK_SIZE):
        stop = min(start + _BLOCK_SIZE, size)
        yield [flat[start:stop] for flat in flats]


class AdamOptimizer:
    """Adam (Kingma and Ba, 2015) with bias correction folded into the step size.

    Parameters
    ----------
    params : list of ndarray
        Parameters, only used for the shapes and dtypes of the moments.
    learning_rate : float
        Step size.
    beta_1, beta_2 : float
        Decay rates of the first and second moment estimates, in [0, 1).
    epsilon : float
        Added to the root of the second moment for numerical stability.
    """

    def __init__(self, params, learning_rate, beta_1, beta_2, epsilon):
        self.learning_rate = learning_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0
        self.first_moments = [np.zeros_like(param) for param in params]
        self.second_moments = [np.zeros_like(param) for param in params]

    def update_params(self, params, grads):
        """Take one step on ``params`` in place; ``grads`` are overwritten."""
        self.t += 1
        step_size = (
            self.learning_rate
            * np.sqrt(1 - self.beta_2**self.t)
            / (1 - self.beta_1**self.t)
        )
        moments = zip(
            params, grads, self.first_moments, self.second_moments, strict=True
        )
        for param, grad, first, second in moments:
            for block in _blocks(param, grad, first, second):
                self._update_block(*block, step_size)

    def _update_block(self, param, grad, first, second, step_size):
        # first <- beta_1 * first + (1 - beta_1) * grad, written without a temporary
        first -= grad
        first *= self.beta_1
        first += grad
        np.square(grad, out=grad)
        second -= grad
        second *= self.beta_2
        second += grad
        np.sqrt(second, out=grad)
        grad += self.epsilon
        np.divide(first, grad, out=grad)
        grad *= step_size
        param -= grad


class SGDOptimizer:
    """Stochastic gradient descent with classical or Nesterov momentum.

    Parameters
    ----------
    params : list of ndarray
        Parameters, only used for the shapes and dtypes of the velocities.
    learning_rate : float
        Step size.
    momentum : float
        Momentum in [0, 1]; 0 gives plain SGD.
    nesterov : bool
        Use Nesterov's momentum, as in ``MLPRegressor``.
    """

    def __init__(self, params, learning_rate, momentum, nesterov):
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.nesterov = nesterov
        self.t = 0
        self.velocities = [np.zeros_like(param) for param in params]

    def update_params(self, params, grads):
        """Take one step on ``params`` in place; ``grads`` are overwritten."""
        self.t += 1
        for param, grad, velocity in zip(params, grads, self.velocities, strict=True):
            for block in _blocks(param, grad, velocity):
                self._update_block(*block)

    def _update_block(self, param, grad, velocity):
        grad *= -self.learning_rate
        velocity *= self.momentum
        velocity += grad
        if self.nesterov:
            # param += momentum * velocity - learning_rate * grad
            param += grad
            grad[...] = velocity
            grad *= self.momentum
            param += grad
        else:
            param += velocity
