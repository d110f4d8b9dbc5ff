"""Time spent in each part of a KSparseAutoencoder training step.

Fits the model of ``bench_speed.py`` (batch 256, Adam, AuxK, fixed k) and
times the parts of each step with wall-clock timers around the trainer's
methods: the forward passes and kept-unit gradients of the row parts (run on
the worker threads), their merge, the weight gradients and the optimizer
update. Prints the mean milliseconds per step of each part. Example::

    python benchmarks/profile_step.py --data PATH/TO/mnist_test.npz \\
        --n-components 2048 --k 16

``--threads 1`` limits BLAS, and with it the estimator's worker threads, to one
thread, which shows how far the parts of a step gain from the second core.

The timers add their own small cost to each call, so a step takes slightly
longer with them than without. With several threads, the forward passes of the
row parts overlap, and their time is the wall time of ``run_tasks``.
"""

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_speed  # noqa: E402

from sklearn_ksparse import _training  # noqa: E402

# (module or class, attribute, label): the calls that are timed.
TIMED_CALLS = [
    (_training, "run_tasks", "forward passes of the row parts"),
    (_training, "_merge_row_parts", "merge of the row parts"),
    (_training, "backpropagate", "weight gradients"),
    (_training.TopKTrainer, "_apply_gradients", "optimizer update"),
    (_training.TopKTrainer, "train_step", "whole step"),
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", required=True, help="npz file with a float array X (rows)"
    )
    parser.add_argument(
        "--n-components", type=int, default=2048, help="number of units"
    )
    parser.add_argument("--k", type=int, default=16, help="units kept per row")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument(
        "--threads", type=int, default=None, help="BLAS threads (default: all)"
    )
    return parser.parse_args(argv)


def add_timers(totals):
    """Wrap each of ``TIMED_CALLS`` so that its wall time adds to ``totals``."""
    for owner, name, label in TIMED_CALLS:
        function = getattr(owner, name)

        def timed(*args, _function=function, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - start

        setattr(owner, name, timed)


def main(argv=None):
    args = parse_args(argv)
    X = bench_speed.load_rows(args.data)
    totals = collections.Counter()
    add_timers(totals)
    model = bench_speed.ksparse_model(args.n_components, args.k, args.epochs)
    with warnings.catch_warnings(), threadpool_limits(args.threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - start
    n_steps = model.t_
    print(
        f"n_components={args.n_components}, k={args.k}, "
        f"threads={args.threads or 'all'}: {n_steps} steps, "
        f"{X.shape[0] * args.epochs / seconds:,.0f} samples/s, "
        f"{model.n_dead_components_} dead units at the end"
    )
    for _, _, label in TIMED_CALLS:
        print(f"  {label}: {totals[label] / n_steps * 1e3:.2f} ms per step")


if __name__ == "__main__":
    main()
