"""Training and encoding speed and peak memory of KSparseAutoencoder.

Compares, in one process tree and on one dataset:

- training throughput (samples per second over ``--epochs`` epochs, batch 256,
  Adam) with a PyTorch CPU top-k autoencoder of the same model, initialisation
  and optimizer (``_torch_reference.py``; skipped when torch is not installed),
  ``MLPRegressor(hidden_layer_sizes=(n_components,))`` fitted X -> X,
  ``MiniBatchDictionaryLearning`` and ``BernoulliRBM``;
- encoding throughput of ``transform`` with ``SparseCoder`` using OMP at the
  same dictionary and k;
- the encoder's matrix product in GFLOP/s next to the float32 GEMM throughput
  NumPy reaches on a large square product, and PyTorch's on the same product;
- one train step in the sparse and the dense code layout, the measurement
  behind ``DENSE_MIN_FRACTION`` in ``sklearn_ksparse/_kernels.py``;
- peak resident memory of ``fit`` and ``transform`` on 10^4 to 10^6 synthetic
  rows of 784 features, each size in a fresh subprocess.

Every figure is the median of ``--repeats`` runs. The markdown report goes to
stdout and, with ``--output``, to a file. Example::

    python benchmarks/bench_speed.py --data PATH/TO/mnist_test.npz \\
        --output speed.md

``--quick`` trains on 2560 rows for one epoch and stops the memory series at
10^5 rows, which takes a few minutes instead of about half an hour.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import sklearn
import threadpoolctl
from sklearn.decomposition import MiniBatchDictionaryLearning, SparseCoder
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import BernoulliRBM, MLPRegressor

from sklearn_ksparse import KSparseAutoencoder
from sklearn_ksparse._kernels import DENSE_MIN_FRACTION, encode_pre_activations
from sklearn_ksparse._optimizers import AdamOptimizer
from sklearn_ksparse._training import TopKTrainer, initial_parameters

# Set by import_torch(), so that the memory subprocesses never load PyTorch.
torch = None
TorchTopKAutoencoder = None

SHAPES = [(512, 16), (512, 64), (2048, 16), (2048, 64)]
BATCH_SIZE = 256
LEARNING_RATE = 1e-3
AUXK_COEF = 1 / 32
DEAD_AFTER = 10000
# Slow baselines are timed on at most this many rows, for one epoch; their
# per-sample cost does not depend on the number of rows.
SLOW_BASELINE_ROWS = 512
SPARSE_CODER_ROWS = 500
QUICK_ROWS = 2560


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", required=True, help="npz file with a float array X (rows)"
    )
    parser.add_argument("--output", help="also write the markdown report here")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per figure (median)"
    )
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="limit BLAS and torch threads to this number (default: unchanged)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2560 rows, one epoch, memory series up to 10^5 rows",
    )
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument(
        "--memory-child",
        nargs=4,
        metavar=("MODE", "ROWS", "N_COMPONENTS", "K"),
        help=argparse.SUPPRESS,
    )
    return parser.parse_args(argv)


def import_torch():
    """Import PyTorch and the reference model; return False if torch is missing."""
    global torch, TorchTopKAutoencoder
    try:
        import torch as torch_module
    except ImportError:
        return False
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _torch_reference import TorchTopKAutoencoder as reference_model

    torch = torch_module
    TorchTopKAutoencoder = reference_model
    return True


def median_time(function, repeats):
    """Return the median wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def load_rows(path, n_rows=None):
    data = np.load(path)
    X = np.ascontiguousarray(data["X"], dtype=np.float32)
    return X if n_rows is None else X[:n_rows]


# ----------------------------------------------------------------------------
# Environment and roofline
# ----------------------------------------------------------------------------


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_lines():
    blas = [
        f"{info['internal_api']} {info['version']} "
        f"({info.get('architecture', '?')}, {info['num_threads']} threads)"
        for info in threadpoolctl.threadpool_info()
        if info["user_api"] == "blas"
    ]
    versions = [
        f"Python {platform.python_version()}",
        f"NumPy {np.__version__}",
        f"SciPy {scipy.__version__}",
        f"scikit-learn {sklearn.__version__}",
    ]
    if torch is not None:
        versions.append(
            f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)"
        )
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, "
        f"{platform.system()} {platform.release()}",
        f"- Libraries: {', '.join(versions)}",
        f"- BLAS (threadpoolctl): {'; '.join(blas) or 'not found'}",
    ]


def gemm_gflops(repeats, size=2048, convert=None):
    """Return the float32 GEMM rate of a square product, in GFLOP/s.

    ``convert`` turns the NumPy operands into another library's arrays, such
    as ``torch.from_numpy``. None times NumPy itself.
    """
    rng = np.random.default_rng(0)
    A = rng.random((size, size), dtype=np.float32)
    B = rng.random((size, size), dtype=np.float32)
    if convert is not None:
        A, B = convert(A), convert(B)
    A @ B
    seconds = median_time(lambda: A @ B, repeats)
    return 2 * size**3 / seconds / 1e9


def encoder_gflops(n_components, n_features, repeats):
    rng = np.random.default_rng(0)
    X = rng.random((BATCH_SIZE, n_features), dtype=np.float32)
    weights = rng.random((n_components, n_features), dtype=np.float32)
    bias = np.zeros(n_components, np.float32)
    pre_bias = np.zeros(n_features, np.float32)

    def encode():
        encode_pre_activations(X, weights, bias, pre_bias)

    encode()
    seconds = median_time(encode, max(repeats, 20))
    return 2 * BATCH_SIZE * n_features * n_components / seconds / 1e9, seconds


# ----------------------------------------------------------------------------
# Training throughput
# ----------------------------------------------------------------------------


def ksparse_model(n_components, k, epochs):
    return KSparseAutoencoder(
        n_components,
        k=k,
        initial_k=None,
        batch_size=BATCH_SIZE,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        learning_rate_init=LEARNING_RATE,
        auxk_coef=AUXK_COEF,
        dead_after=DEAD_AFTER,
        random_state=0,
    )


def fit_quietly(model, X, y=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


def time_ksparse(X, n_components, k, epochs, repeats):
    model = ksparse_model(n_components, k, epochs)
    fit_quietly(model, X[: 2 * BATCH_SIZE])
    seconds = median_time(lambda: fit_quietly(model, X), repeats)
    return X.shape[0] * epochs / seconds, model


def time_torch(X, n_components, k, epochs, repeats):
    n_features = X.shape[1]
    pre_bias = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    auxk_k = max(1, n_features // 2)

    def fit():
        params = initial_parameters(
            n_components, pre_bias, False, np.random.RandomState(0)
        )
        model = TorchTopKAutoencoder(
            params, k, auxk_k, AUXK_COEF, DEAD_AFTER, LEARNING_RATE
        )
        model.fit(X, epochs, BATCH_SIZE, seed=0)

    seconds = median_time(fit, repeats)
    return X.shape[0] * epochs / seconds


def time_baseline(make_model, X, repeats):
    def fit():
        model = make_model()
        # MLPRegressor reconstructs its input; the other baselines ignore y.
        fit_quietly(model, X, X if isinstance(model, MLPRegressor) else None)

    seconds = median_time(fit, repeats)
    return seconds


def baseline_models(n_components, epochs):
    """Return (name, factory, rows, epochs) for the scikit-learn baselines."""
    return [
        (
            "MLPRegressor X->X",
            lambda: MLPRegressor(
                hidden_layer_sizes=(n_components,),
                batch_size=BATCH_SIZE,
                max_iter=epochs,
                learning_rate_init=LEARNING_RATE,
                tol=0.0,
                n_iter_no_change=epochs + 1,
                random_state=0,
            ),
            None,
            epochs,
        ),
        (
            "BernoulliRBM",
            lambda: BernoulliRBM(
                n_components, batch_size=BATCH_SIZE, n_iter=epochs, random_state=0
            ),
            None,
            epochs,
        ),
        (
            "MiniBatchDictionaryLearning (LARS)",
            lambda: MiniBatchDictionaryLearning(
                n_components,
                batch_size=BATCH_SIZE,
                max_iter=1,
                transform_algorithm="omp",
                random_state=0,
            ),
            SLOW_BASELINE_ROWS,
            1,
        ),
    ]


def training_rows(X, args):
    shapes_table = []
    baselines_done = {}
    fitted = {}
    for n_components, k in SHAPES:
        print(f"training n_components={n_components} k={k}", file=sys.stderr)
        ours, model = time_ksparse(X, n_components, k, args.epochs, args.repeats)
        fitted[n_components, k] = model
        row = {"shape": (n_components, k), "ours": ours, "others": {}}
        if torch is not None:
            row["others"]["PyTorch top-k AE"] = time_torch(
                X, n_components, k, args.epochs, args.repeats
            )
        if not args.skip_baselines:
            row["others"].update(
                baseline_throughputs(X, n_components, args, baselines_done)
            )
        shapes_table.append(row)
    return shapes_table, fitted


def baseline_throughputs(X, n_components, args, cache):
    """Time the scikit-learn baselines, once per n_components.

    Their cost does not depend on k: MiniBatchDictionaryLearning fits with
    LARS, whose sparsity ``alpha`` sets, because OMP is not one of its
    ``fit_algorithm`` options.
    """
    if n_components in cache:
        return cache[n_components]
    results = {}
    for name, factory, rows, epochs in baseline_models(n_components, args.epochs):
        subset = X if rows is None else X[:rows]
        seconds = time_baseline(factory, subset, args.repeats)
        results[name] = subset.shape[0] * epochs / seconds
    cache[n_components] = results
    return results


# ----------------------------------------------------------------------------
# Encoding throughput
# ----------------------------------------------------------------------------


def encoding_rows(X, fitted, args):
    rows = []
    for (n_components, k), model in fitted.items():
        print(f"encoding n_components={n_components} k={k}", file=sys.stderr)
        # Each coder first encodes the rows it is timed on once, untimed, which
        # starts the worker threads and lets the memory allocator settle.
        model.transform(X)
        ours = X.shape[0] / median_time(
            lambda model=model: model.transform(X), args.repeats
        )
        coder = SparseCoder(
            model.components_,
            transform_algorithm="omp",
            transform_n_nonzero_coefs=k,
        )
        subset = X[:SPARSE_CODER_ROWS] if not args.quick else X[:200]
        coder.transform(subset)
        theirs = subset.shape[0] / median_time(
            lambda coder=coder, subset=subset: coder.transform(subset), args.repeats
        )
        rows.append({"shape": (n_components, k), "ours": ours, "omp": theirs})
    return rows


# ----------------------------------------------------------------------------
# Sparse and dense code layouts
# ----------------------------------------------------------------------------


def layout_step_seconds(X, n_components, k, dense, repeats):
    """Return the median time of one train step without AuxK in one layout.

    As in the estimator, the rows are split among the optimizer's threads,
    each with one BLAS thread.
    """
    pre_bias = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    params = initial_parameters(n_components, pre_bias, False, np.random.RandomState(0))
    names = [name for name in TopKTrainer.PARAM_ORDER if name in params]
    optimizer = AdamOptimizer(
        [params[name] for name in names], LEARNING_RATE, 0.9, 0.999, 1e-8
    )
    trainer = TopKTrainer(params, optimizer, "relu", True, 0.0, 1, DEAD_AFTER)
    trainer.dense = dense
    trainer.n_workers = optimizer.n_threads
    batch = X[:BATCH_SIZE]
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        trainer.train_step(batch, k)
        return median_time(lambda: trainer.train_step(batch, k), max(repeats, 15))


def layout_rows(X, args):
    grid = [(512, 16), (512, 32), (512, 48), (512, 64), (512, 128)]
    grid += [(2048, 16), (2048, 64), (2048, 128), (2048, 256), (2048, 512)]
    rows = []
    for n_components, k in grid:
        sparse = layout_step_seconds(X, n_components, k, False, args.repeats)
        dense = layout_step_seconds(X, n_components, k, True, args.repeats)
        rows.append({"shape": (n_components, k), "sparse": sparse, "dense": dense})
    return rows


# ----------------------------------------------------------------------------
# Peak memory, one subprocess per measurement
# ----------------------------------------------------------------------------


def current_rss_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss():
    """Reset the kernel's peak RSS of this process; return False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_rss_bytes():
    """Return the peak RSS since the last reset (since start without one)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux and counts from the process start.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synthetic_rows(n_rows, n_features=784, chunk=65536):
    """Return uniform float32 rows, generated in place chunk by chunk."""
    rng = np.random.default_rng(0)
    X = np.empty((n_rows, n_features), dtype=np.float32)
    for start in range(0, n_rows, chunk):
        rng.random(out=X[start : start + chunk], dtype=np.float32)
    return X


def memory_child(mode, n_rows, n_components, k):
    """Measure one fit or transform in this process and print JSON."""
    model = ksparse_model(n_components, k, epochs=1)
    if mode == "transform":
        fit_quietly(model, synthetic_rows(2 * BATCH_SIZE))
    before = current_rss_bytes()
    peak_was_reset = reset_peak_rss()
    X = synthetic_rows(n_rows)
    start = time.perf_counter()
    if mode == "fit":
        fit_quietly(model, X)
        output_bytes = 0
    else:
        codes = model.transform(X)
        output_bytes = codes.data.nbytes + codes.indices.nbytes + codes.indptr.nbytes
    seconds = time.perf_counter() - start
    result = {
        "before": before,
        "peak": peak_rss_bytes(),
        "input": X.nbytes,
        "output": output_bytes,
        "seconds": seconds,
        "peak_was_reset": peak_was_reset,
    }
    print(json.dumps(result))


def memory_rows(args, n_components=512, k=16):
    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6]
    rows = []
    for mode in ("fit", "transform"):
        for n_rows in sizes:
            print(f"memory {mode} {n_rows} rows", file=sys.stderr)
            command = [sys.executable, __file__, "--data", args.data]
            if args.threads is not None:
                command += ["--threads", str(args.threads)]
            command += ["--memory-child", mode, str(n_rows), str(n_components), str(k)]
            output = subprocess.run(
                command, check=True, capture_output=True, text=True
            ).stdout
            result = json.loads(output.strip().splitlines()[-1])
            rows.append({"mode": mode, "rows": n_rows, **result})
    return rows, (n_components, k)


# ----------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------


def format_rate(value):
    return f"{value:,.0f}"


def training_table(rows):
    names = sorted({name for row in rows for name in row["others"]})
    header = ["n_components, k", "KSparseAutoencoder"]
    for name in names:
        header += [name, "ratio"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [f"{row['shape'][0]}, {row['shape'][1]}", format_rate(row["ours"])]
        for name in names:
            value = row["others"].get(name)
            if value is None:
                cells += ["-", "-"]
            else:
                cells += [format_rate(value), f"{row['ours'] / value:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def torch_gemm_text(results):
    """Return the PyTorch GEMM rate as a clause, or nothing without PyTorch."""
    if "torch_gemm" not in results:
        return ""
    return f"; in PyTorch: {results['torch_gemm']:.0f} GFLOP/s"


def report(args, results, elapsed, loads):
    data_shape = results["data_shape"]
    command = "python benchmarks/bench_speed.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command}`",
        "",
        *environment_lines(),
        f"- Load average (1 min) at start and end: {loads[0]:.2f}, {loads[1]:.2f}",
        f"- Data: `{Path(args.data).name}`, {data_shape[0]} x {data_shape[1]}, "
        f"float32; {args.repeats} repeats per figure (median); "
        f"total run time {elapsed:.0f} s",
        "",
    ]
    gemm = results["gemm"]
    lines += [
        "### Training throughput (samples/s)",
        "",
        f"Batch {BATCH_SIZE}, Adam, learning rate {LEARNING_RATE}, "
        f"{results['epochs']} epoch(s) on {results['train_rows']} rows; ratio = "
        "KSparseAutoencoder / tool. KSparseAutoencoder and the PyTorch model keep "
        f"k fixed (`initial_k=None`), with AuxK (coefficient {AUXK_COEF:.4g}, "
        f"dead after {DEAD_AFTER} samples) and unit-norm atoms. MLPRegressor and "
        "BernoulliRBM run the same epochs on the same rows. "
        f"MiniBatchDictionaryLearning runs one epoch on {SLOW_BASELINE_ROWS} rows "
        "and fits with LARS (`alpha=1`), since scikit-learn offers no OMP fit.",
        "",
        *training_table(results["training"]),
        "",
    ]
    lines += [
        "### Encoding throughput (samples/s)",
        "",
        "`transform` on all rows against `SparseCoder(transform_algorithm='omp', "
        "transform_n_nonzero_coefs=k)` with the same dictionary, timed on "
        f"{SPARSE_CODER_ROWS if not args.quick else 200} rows.",
        "",
        "| n_components, k | transform | SparseCoder OMP | ratio |",
        "|---|---|---|---|",
    ]
    for row in results["encoding"]:
        lines.append(
            f"| {row['shape'][0]}, {row['shape'][1]} | {format_rate(row['ours'])} | "
            f"{format_rate(row['omp'])} | {row['ours'] / row['omp']:.0f}x |"
        )
    lines += [
        "",
        "### Encoder product against the GEMM roofline",
        "",
        f"float32 GEMM 2048 x 2048 x 2048 in NumPy: {gemm:.0f} GFLOP/s"
        f"{torch_gemm_text(results)}. The encoder "
        f"product is ({BATCH_SIZE} x n_features) @ (n_features x n_components); "
        "its share of a train step uses the step time implied by the training "
        "throughput above.",
        "",
        "| n_components, k | encoder GFLOP/s | of GEMM peak | encoder ms | "
        "step ms | encoder share of step |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["training"]:
        n_components, k = row["shape"]
        gflops, seconds = results["encoder"][n_components]
        step = BATCH_SIZE / row["ours"]
        lines.append(
            f"| {n_components}, {k} | {gflops:.0f} | {gflops / gemm:.0%} | "
            f"{seconds * 1e3:.2f} | {step * 1e3:.2f} | {seconds / step:.0%} |"
        )
    lines += [
        "",
        "### Sparse and dense code layouts",
        "",
        "One train step (batch 256, no AuxK) with the codes in each layout, "
        "with the rows split among the optimizer's threads as in the "
        "estimator. The estimator switches to dense above k / n_components = "
        f"{DENSE_MIN_FRACTION:.3f}.",
        "",
        "| n_components, k | k / n_components | sparse ms | dense ms | "
        "dense / sparse |",
        "|---|---|---|---|---|",
    ]
    for row in results["layouts"]:
        n_components, k = row["shape"]
        lines.append(
            f"| {n_components}, {k} | {k / n_components:.3f} | "
            f"{row['sparse'] * 1e3:.2f} | {row['dense'] * 1e3:.2f} | "
            f"{row['dense'] / row['sparse']:.2f} |"
        )
    if results.get("memory"):
        memory, (n_components, k) = results["memory"]
        if not all(row["peak_was_reset"] for row in memory):
            lines += [
                "",
                "NOTE: /proc/self/clear_refs was not writable, so some peaks "
                "count from the start of their process.",
            ]
        lines += [
            "",
            "### Peak resident memory",
            "",
            f"Synthetic float32 rows of 784 features, n_components={n_components}, "
            f"k={k}, one epoch for `fit`; each measurement in a fresh process. "
            "Peak RSS is the kernel's high-water mark (VmHWM), reset just before "
            "the input is generated. Extra = peak RSS minus the RSS before the "
            "input existed, so it counts the input itself; for `transform` the "
            "ratio divides the extra by input plus CSR output.",
            "",
            "| call | rows | input MiB | output MiB | peak RSS MiB | extra MiB | "
            "extra / (input + output) | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        mib = 2**20
        for row in memory:
            extra = row["peak"] - row["before"]
            ratio = extra / (row["input"] + row["output"])
            lines.append(
                f"| {row['mode']} | {row['rows']:,} | {row['input'] / mib:.0f} | "
                f"{row['output'] / mib:.1f} | {row['peak'] / mib:.0f} | "
                f"{extra / mib:.0f} | {ratio:.2f} | {row['seconds']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def run(args):
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    X = load_rows(args.data)
    if args.quick:
        X = X[:QUICK_ROWS]
        args.epochs = 1
    results = {"data_shape": load_rows(args.data).shape, "epochs": args.epochs}
    results["train_rows"] = X.shape[0]
    print("GEMM roofline", file=sys.stderr)
    results["gemm"] = gemm_gflops(args.repeats)
    if torch is not None:
        results["torch_gemm"] = gemm_gflops(args.repeats, convert=torch.from_numpy)
    results["encoder"] = {
        n_components: encoder_gflops(n_components, X.shape[1], args.repeats)
        for n_components in sorted({shape[0] for shape in SHAPES})
    }
    results["training"], fitted = training_rows(X, args)
    results["encoding"] = encoding_rows(X, fitted, args)
    print("code layouts", file=sys.stderr)
    results["layouts"] = layout_rows(X, args)
    if not args.skip_memory:
        results["memory"] = memory_rows(args)
    elapsed = time.perf_counter() - start
    text = report(args, results, elapsed, (load_start, os.getloadavg()[0]))
    print(text)
    if args.output:
        Path(args.output).write_text(text)


def main(argv=None):
    args = parse_args(argv)
    if not args.memory_child:
        import_torch()
    limits = None
    if args.threads is not None:
        limits = threadpoolctl.threadpool_limits(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
    try:
        if args.memory_child:
            mode, n_rows, n_components, k = args.memory_child
            memory_child(mode, int(n_rows), int(n_components), int(k))
        else:
            run(args)
    finally:
        if limits is not None:
            limits.restore_original_limits()


if __name__ == "__main__":
    main()
