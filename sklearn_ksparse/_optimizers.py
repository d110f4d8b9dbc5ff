"""In-place stochastic optimizers over a list of NumPy parameter arrays.

Each optimizer updates the arrays it is given in place and overwrites the gradient
arrays as scratch space, so a step allocates no parameter-sized memory. Updates run
over blocks of ``_BLOCK_SIZE`` elements so that the dozen elementwise passes of a
step stay in the CPU cache instead of streaming every array from memory each time.
The blocks are shared among a few threads: NumPy releases the GIL inside its
elementwise loops, so the threads run on separate cores.
"""

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
from threadpoolctl import ThreadpoolController

# Each elementwise pass over a block is one NumPy call, so small blocks pay the
# call overhead many times. One Adam step with unit-norm atoms on two 2048 x 784
# float32 matrices took 6.9 ms with 65,536-element blocks and 4.6 ms with
# 196,608 (768 KiB per array), and on 512 x 784 matrices 2.2 and 1.4 ms. That
# was measured with NumPy 2.4 on 2 threads of a 2-core Intel Xeon (KVM, AVX-512,
# 2 MiB L2 per core), where blocks of 262,144 and 393,216 were no faster.
_BLOCK_SIZE = 196608

# NOTE: measured on 2 cores only. Beyond a few threads the elementwise updates
# are expected to be limited by memory bandwidth, hence the cap.
_MAX_THREADS = 4

_executor = None
_executor_key = None


def default_n_threads():
    """Return the number of worker threads: BLAS's thread count, at most 4.

    Following the BLAS setting means that ``threadpoolctl.threadpool_limits``
    and ``OPENBLAS_NUM_THREADS``, as set when the optimizer is built, limit the
    updates too.
    """
    counts = [
        controller.num_threads
        for controller in _blas_controller().lib_controllers
        if controller.user_api == "blas"
    ]
    if not counts:
        return 1
    return max(1, min(max(counts), _MAX_THREADS))


@functools.cache
def _blas_controller():
    # Listing the loaded libraries takes milliseconds, so it happens once. The
    # thread counts are still read from the libraries on each call.
    return ThreadpoolController().select(user_api="blas")


def get_executor(n_threads):
    """Return a shared thread pool, made anew after a fork or a size change."""
    global _executor, _executor_key
    key = (os.getpid(), n_threads)
    if _executor_key != key:
        _executor = ThreadPoolExecutor(max_workers=n_threads)
        _executor_key = key
    return _executor


def _blocks(*arrays):
    """Yield aligned slices of equally shaped C-contiguous arrays.

    Matrices are cut into blocks of whole rows, so that a row-wise step such as
    the unit-norm projection can run on a block while it is in the cache.
    Vectors are cut into flat slices.
    """
    first = arrays[0]
    if first.ndim == 2:
        step = max(1, _BLOCK_SIZE // max(first.shape[1], 1))
        n_rows = first.shape[0]
    else:
        arrays = [array.reshape(-1) for array in arrays]
        step = _BLOCK_SIZE
        n_rows = arrays[0].shape[0]
    for start in range(0, n_rows, step):
        yield [array[start : start + step] for array in arrays]


def _run_group(update_block, blocks, args):
    for block in blocks:
        update_block(*block, *args)


def run_blocks(update_block, blocks, args, n_threads):
    """Call ``update_block(*block, *args)`` on every block, on up to n threads.

    Each thread takes an interleaved share of the blocks. Blocks never overlap,
    so the result does not depend on the number of threads.
    """
    groups = [
        (update_block, blocks[offset::n_threads], args)
        for offset in range(min(n_threads, len(blocks)))
    ]
    run_tasks(_run_group, groups, n_threads)


def run_tasks(function, argument_tuples, n_threads):
    """Return ``[function(*arguments) for arguments in argument_tuples]``.

    With ``n_threads > 1`` and several tasks, the tasks run on the shared
    thread pool, under the caller's floating-point error state, which threads
    do not inherit.
    """
    if n_threads <= 1 or len(argument_tuples) <= 1:
        return [function(*arguments) for arguments in argument_tuples]
    run = in_caller_error_state(function)
    executor = get_executor(n_threads)
    futures = [executor.submit(run, *arguments) for arguments in argument_tuples]
    return [future.result() for future in futures]


def in_caller_error_state(function):
    """Wrap ``function`` to run under the caller's floating-point error state.

    NumPy keeps the error state per thread, and pool threads do not inherit
    it, so a worker would warn where the caller ignores or raises.
    """
    error_state = np.geterr()

    def run(*arguments):
        with np.errstate(**error_state):
            return function(*arguments)

    return run


def single_blas_thread():
    """Return a context that limits BLAS to one thread, from the main thread only.

    With threadpoolctl 3.8 and OpenBLAS on pthreads, only the first thread to
    set a limit controls the process-wide BLAS pool, and two threads whose
    limits overlap can leave the pool at the inner limit for good. So only
    the main thread sets a limit here; other threads get a context that does
    nothing. Callers check ``default_n_threads() == 1`` inside the context
    before they start worker threads.
    """
    if threading.current_thread() is not threading.main_thread():
        return nullcontext()
    return _blas_controller().limit(limits=1)


def _param_blocks(hooks, *array_lists):
    """Return the aligned blocks of every parameter and its state arrays.

    Each block ends with the parameter's ``(before, after)`` hooks, or a pair
    of None when ``hooks`` is None.
    """
    if hooks is None:
        hooks = [(None, None)] * len(array_lists[0])
    return [
        [*block, *block_hooks]
        for *arrays, block_hooks in zip(*array_lists, hooks, strict=True)
        for block in _blocks(*arrays)
    ]


class AdamOptimizer:
    """Adam (Kingma and Ba, 2015) with bias correction folded into the step size.

    The step is ``param -= step_size * m / (sqrt(v) + epsilon)`` with
    ``step_size = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)``, as in
    scikit-learn's MLP. The moments are stored as ``m / (1 - beta_1)`` and
    ``v / (1 - beta_2)``, which is the same step with two fewer elementwise
    passes, because each moment then updates as ``beta * moment + grad`` (or
    ``grad**2``).

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
        self.learning_rate = float(learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.t = 0
        # Scaled moments: m / (1 - beta_1) and v / (1 - beta_2).
        self.first_moments = [np.zeros_like(param) for param in params]
        self.second_moments = [np.zeros_like(param) for param in params]

    def update_params(self, params, grads, hooks=None):
        """Take one step on ``params`` in place, overwriting ``grads``.

        ``hooks`` contains, per parameter, a ``(before, after)`` pair of functions
        or None: ``before(grad, param)`` runs on each block of the gradient
        before the update and ``after(param)`` on each updated block.
        """
        self.t += 1
        # sqrt(v) + epsilon = root_scale * (sqrt(v_scaled) + epsilon / root_scale)
        root_scale = np.sqrt(1 - self.beta_2)
        step_size = (
            self.learning_rate
            * np.sqrt(1 - self.beta_2**self.t)
            / (1 - self.beta_1**self.t)
            * (1 - self.beta_1)
            / root_scale
        )
        # Python floats keep float32 arrays in float32 arithmetic, whereas a
        # NumPy float64 scalar would make each in-place pass compute in float64.
        step_size, epsilon = float(step_size), float(self.epsilon / root_scale)
        blocks = _param_blocks(
            hooks, params, grads, self.first_moments, self.second_moments
        )
        run_blocks(self._update_block, blocks, (step_size, epsilon), self.n_threads)

    def _update_block(
        self, param, grad, first, second, before, after, step_size, epsilon
    ):
        if before is not None:
            before(grad, param)
        first *= self.beta_1
        first += grad
        np.square(grad, out=grad)
        second *= self.beta_2
        second += grad
        np.sqrt(second, out=grad)
        grad += epsilon
        np.divide(first, grad, out=grad)
        grad *= step_size
        param -= grad
        if after is not None:
            after(param)


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
        self.learning_rate = float(learning_rate)
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.t = 0
        self.velocities = [np.zeros_like(param) for param in params]

    def update_params(self, params, grads, hooks=None):
        """Take one step on ``params`` in place, overwriting ``grads``.

        ``hooks`` works as in ``AdamOptimizer.update_params``.
        """
        self.t += 1
        blocks = _param_blocks(hooks, params, grads, self.velocities)
        run_blocks(self._update_block, blocks, (), self.n_threads)

    def _update_block(self, param, grad, velocity, before, after):
        if before is not None:
            before(grad, param)
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
        if after is not None:
            after(param)
