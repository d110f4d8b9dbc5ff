"""In-place stochastic optimizers over a list of NumPy parameter arrays.

Each optimizer updates the arrays it is given in place and overwrites the gradient
arrays as scratch space, so a step allocates no parameter-sized memory. Updates run
over blocks of ``_BLOCK_SIZE`` elements so that the dozen elementwise passes of a
step stay in the CPU cache instead of streaming every array from memory each time.
The blocks are shared among a few threads: NumPy releases the GIL inside its
elementwise loops, so the threads run on separate cores.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info

_BLOCK_SIZE = 65536

# NOTE: measured on 2 cores only. Beyond a few threads the elementwise updates
# are expected to be limited by memory bandwidth, hence the cap.
_MAX_THREADS = 4

_executor = None
_executor_key = None


def default_n_threads():
    """Return the thread count for optimizer updates: BLAS's, at most 4.

    Following the BLAS setting means that ``threadpoolctl.threadpool_limits``
    and ``OPENBLAS_NUM_THREADS``, as set when the optimizer is built, limit the
    updates too.
    """
    counts = [
        info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"
    ]
    if not counts:
        return 1
    return max(1, min(max(counts), _MAX_THREADS))


def _get_executor(n_threads):
    """Return a shared thread pool, made anew after a fork or a size change."""
    global _executor, _executor_key
    key = (os.getpid(), n_threads)
    if _executor_key != key:
        _executor = ThreadPoolExecutor(max_workers=n_threads)
        _executor_key = key
    return _executor


def _blocks(*arrays):
    """Yield aligned flat slices of equally shaped contiguous arrays."""
    flats = [array.reshape(-1) for array in arrays]
    size = flats[0].size
    for start in range(0, size, _BLOCK_SIZE):
        stop = min(start + _BLOCK_SIZE, size)
        yield [flat[start:stop] for flat in flats]


def _run_group(update_block, blocks, args):
    for block in blocks:
        update_block(*block, *args)


def run_blocks(update_block, blocks, args, n_threads):
    """Call ``update_block(*block, *args)`` on every block, on up to n threads.

    Each thread takes an interleaved share of the blocks. Blocks never overlap,
    so the result does not depend on the number of threads.
    """
    n_threads = min(n_threads, len(blocks))
    if n_threads <= 1:
        _run_group(update_block, blocks, args)
        return
    executor = _get_executor(n_threads)
    futures = [
        executor.submit(_run_group, update_block, blocks[offset::n_threads], args)
        for offset in range(n_threads)
    ]
    for future in futures:
        future.result()


def _param_blocks(*array_lists):
    """Return the aligned blocks of every parameter and its state arrays."""
    return [
        block for arrays in zip(*array_lists, strict=True) for block in _blocks(*arrays)
    ]


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
    n_threads : int, default=None
        Threads that share the update; None means ``default_n_threads()``.
    """

    def __init__(self, params, learning_rate, beta_1, beta_2, epsilon, n_threads=None):
        self.n_threads = default_n_threads() if n_threads is None else n_threads
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
        blocks = _param_blocks(params, grads, self.first_moments, self.second_moments)
        run_blocks(self._update_block, blocks, (step_size,), self.n_threads)

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
    n_threads : int, default=None
        Threads that share the update; None means ``default_n_threads()``.
    """

    def __init__(self, params, learning_rate, momentum, nesterov, n_threads=None):
        self.n_threads = default_n_threads() if n_threads is None else n_threads
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.nesterov = nesterov
        self.t = 0
        self.velocities = [np.zeros_like(param) for param in params]

    def update_params(self, params, grads):
        """Take one step on ``params`` in place; ``grads`` are overwritten."""
        self.t += 1
        blocks = _param_blocks(params, grads, self.velocities)
        run_blocks(self._update_block, blocks, (), self.n_threads)

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
