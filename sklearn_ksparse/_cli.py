"""Command line of ``python -m sklearn_ksparse``.

With no arguments the command runs the digits demo. The ``fit`` subcommand trains a
model on a CSV, ``.npy`` or ``.npz`` file and saves it with joblib. The
``transform`` subcommand encodes a file with a saved model and writes the codes
with :func:`scipy.sparse.save_npz`. Data larger than ``--memory-limit`` is streamed in
chunks through :meth:`KSparseAutoencoder.partial_fit`.
"""

import argparse
import contextlib
import io
import os
import sys
import time
import warnings

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._demo import run_digits_demo
from ._io import (
    ArrayTable,
    DataError,
    atomic_output,
    check_readable,
    check_writable,
    open_table,
)
from ._ksparse import KSparseAutoencoder
from ._training import TrainingDivergedError

PROG = "python -m sklearn_ksparse"
# Seconds between two progress lines inside one pass over the data.
_PROGRESS_INTERVAL = 10.0


class CommandError(Exception):
    """Raised for a request the command cannot carry out; the message is shown."""


# ----------------------------------------------------------------------
# Argument parsing
# ----------------------------------------------------------------------


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


# The seeds that numpy.random.RandomState accepts.
_MAX_SEED = 2**32 - 1


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if not 0 <= value <= _MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 0 to {_MAX_SEED}, got {value}"
        )
    return value


def _file_path(text):
    # An empty path would otherwise be reported as a missing file named "".
    if not text:
        raise argparse.ArgumentTypeError("expected a file path, got an empty string")
    return text


def _output_file_help(command):
    """Return the help on how ``command`` writes its output file."""
    return (
        f"An existing file is replaced only when the {command} succeeds, by a "
        "new file with the same permission bits. A symlink is followed and the "
        "file it points to is replaced. A device, FIFO or socket is rejected."
    )


def build_parser():
    """Build the argument parser with its ``fit`` and ``transform`` subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Train a K-sparse autoencoder. With no arguments, fit on "
            "scikit-learn's bundled digits and report the results."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_fit_parser(subparsers)
    _add_transform_parser(subparsers)
    return parser


def _add_fit_parser(subparsers):
    parser = subparsers.add_parser(
        "fit",
        help="train a model on a data file and save it",
        description=(
            "Train a KSparseAutoencoder on DATA and save it with joblib. DATA is a "
            "CSV file of numeric columns (a first line with any non-number is "
            "read as the header), a .npy array, or a .npz archive. Data larger "
            "than --memory-limit is read in chunks of --chunk-rows rows and "
            "trained with partial_fit, one pass over the file per epoch; rows "
            "are then shuffled within each chunk only, so store them in random "
            "order. Scale the columns beforehand: the model is trained on the "
            "values as they are."
        ),
    )
    parser.add_argument(
        "data",
        nargs="?",
        type=_file_path,
        metavar="DATA",
        help="training data file; default: scikit-learn's bundled digits "
        "(1797 rows, 64 pixel columns scaled to [0, 1])",
    )
    parser.add_argument(
        "--model",
        required=True,
        type=_file_path,
        metavar="PATH",
        help="file the fitted model is written to (joblib format). "
        + _output_file_help("fit"),
    )
    _add_model_options(parser)
    _add_training_options(parser)
    _add_chunk_options(parser, " when it is streamed")
    parser.add_argument(
        "--memory-limit",
        type=_positive_float,
        default=1024.0,
        metavar="MIB",
        help="DATA whose float array would exceed this many MiB is streamed "
        "in chunks through partial_fit instead of loaded whole (default: 1024)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream DATA in chunks through partial_fit whatever its size",
    )
    parser.set_defaults(handler=run_fit)


def _add_model_options(parser):
    parser.add_argument(
        "--n-components",
        type=_positive_int,
        default=256,
        metavar="N",
        help="number of hidden units, the width of the codes (default: 256)",
    )
    parser.add_argument(
        "--k",
        type=_positive_int,
        default=16,
        metavar="K",
        help="number of active units per row during training (default: 16)",
    )
    parser.add_argument(
        "--transform-k",
        type=_positive_int,
        default=None,
        metavar="K",
        help="number of active units per row in the codes that transform "
        "writes (default: the value of --k)",
    )


def _add_training_options(parser):
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=200,
        metavar="N",
        help="maximum number of passes over DATA; training stops earlier once "
        "the loss has not improved by 0.01%% for 10 epochs (default: 200)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="ROWS",
        help="rows per optimizer step (default: 256, or fewer rows in a "
        "smaller dataset or chunk)",
    )
    parser.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=1e-3,
        metavar="RATE",
        help="step size of the Adam optimizer (default: 0.001)",
    )
    parser.add_argument(
        "--random-state",
        type=_seed,
        default=0,
        metavar="SEED",
        help="seed of the initialisation and the shuffling, an integer from 0 "
        "to 2**32 - 1 (default: 0)",
    )


def _add_transform_parser(subparsers):
    parser = subparsers.add_parser(
        "transform",
        help="encode a data file with a saved model",
        description=(
            "Encode the rows of DATA with a model saved by 'fit' and write the "
            "codes as a CSR matrix with scipy.sparse.save_npz (load it with "
            "scipy.sparse.load_npz). DATA is read in chunks of --chunk-rows "
            "rows; only the codes are held in memory, unless DATA is a sparse "
            ".npz archive or a Fortran-order array in one, which is loaded "
            "whole. The model file is unpickled: load only model files you "
            "trust."
        ),
    )
    parser.add_argument(
        "data", type=_file_path, metavar="DATA", help="data file to encode"
    )
    parser.add_argument(
        "--model",
        required=True,
        type=_file_path,
        metavar="PATH",
        help="model file written by 'fit'",
    )
    parser.add_argument(
        "--output",
        required=True,
        type=_file_path,
        metavar="PATH",
        help="file the codes are written to (.npz). " + _output_file_help("transform"),
    )
    _add_chunk_options(parser, "")
    parser.set_defaults(handler=run_transform)


def _add_chunk_options(parser, when):
    parser.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=10000,
        metavar="ROWS",
        help=f"rows read from DATA at a time{when} (default: 10000)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print no progress lines on stderr",
    )


# ----------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------


def main(argv=None):
    """Run the command line and return its exit status.

    Errors in the input are printed as one line on stderr with status 1;
    usage errors exit with status 2 from argparse.
    """
    args = build_parser().parse_args(argv)
    if args.command is None:
        run_digits_demo()
        return 0
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.handler(args)
        except TrainingDivergedError as error:
            _print_error(f"{error} On the command line, lower --learning-rate.")
            return 1
        except (DataError, CommandError, ValueError) as error:
            _print_error(error)
            return 1
        except MemoryError:
            _print_error(
                "out of memory. Pass --stream with a smaller --chunk-rows, or a "
                "lower --memory-limit."
            )
            return 1
        except KeyboardInterrupt:
            _print_error("interrupted; no output file was written.")
            return 130


def _print_error(error):
    print(f"{PROG}: error: {error}", file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = str(message)
    if "learning_rate_init" in text:
        # The estimator's messages name its parameter, which the command line
        # sets with --learning-rate.
        text += " On the command line, lower --learning-rate."
    print(f"{PROG}: warning: {text}", file=sys.stderr)


# ----------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------


def _reject_overwrite(path, option, content, **protected):
    """Raise ``DataError`` if ``path`` names one of the ``protected`` files.

    ``protected`` maps the role of each input file ("model", "data") to its
    path, or to None when there is no such file.
    """
    descriptions = {"model": "the model file", "data": "the input data file"}
    for role, other in protected.items():
        if other is not None and _same_file(path, other):
            raise DataError(
                f"{path}: the {option} path is {descriptions[role]}, which the "
                f"{content} would overwrite. Pass another --{option} path."
            )


def _same_file(path, other):
    """Return whether two paths name one file, through links of either kind."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    # Hard links have different real paths but one inode.
    return (
        os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other)
    )


def run_fit(args):
    """Train a model on ``args.data`` and save it to ``args.model``."""
    _reject_overwrite(args.model, "model", "model", data=args.data)
    check_writable(args.model)
    table = _open_training_table(args.data)
    model = _make_model(args)
    progress = _Progress(sys.stderr, args.quiet)
    if args.stream or table.estimated_nbytes() > args.memory_limit * 2**20:
        mode = "streamed"
        n_epochs, final_loss = _fit_streaming(model, table, args, progress)
    else:
        mode = "in memory"
        n_epochs, final_loss = _fit_in_memory(model, table, args, progress)
    _save_model(model, args.model)
    _print_fit_summary(
        model, table, args, mode, (n_epochs, final_loss), progress.elapsed()
    )
    return 0


def _open_training_table(path):
    if path is not None:
        return open_table(path)
    return ArrayTable(load_digits().data / 16.0, "scikit-learn's digits")


def _make_model(args):
    return KSparseAutoencoder(
        n_components=args.n_components,
        k=args.k,
        transform_k=args.transform_k,
        learning_rate_init=args.learning_rate,
        batch_size="auto" if args.batch_size is None else args.batch_size,
        max_iter=args.epochs,
        random_state=args.random_state,
    )


def _fit_in_memory(model, table, args, progress):
    """Load the whole table and train with ``fit``.

    Returns the number of epochs run and the mean loss of the last one.
    """
    X = table.read()
    model.set_params(verbose=0 if args.quiet else 1)
    # fit prints one line per epoch on stdout; they become progress lines.
    forwarder = _EpochLineForwarder(progress, args.epochs)
    with contextlib.redirect_stdout(forwarder):
        model.fit(X)
    forwarder.flush_pending()
    model.set_params(verbose=0)
    return model.n_iter_, model.loss_curve_[-1]


def _fit_streaming(model, table, args, progress):
    """Train with one ``partial_fit`` call per chunk, one pass per epoch.

    Stops after ``args.epochs`` passes, or earlier by the rule of ``fit``: once
    the mean loss of a pass has not improved by ``tol`` (relative) for
    ``n_iter_no_change`` passes. Returns the number of passes run and the
    mean loss over the rows of the last one.
    """
    stopper = _LossStopper(model.tol, model.n_iter_no_change)
    with warnings.catch_warnings():
        # The last chunk of a pass can be smaller than the batch size.
        warnings.filterwarnings("ignore", message=r"batch_size=\d+ is larger")
        for epoch in range(1, args.epochs + 1):
            loss = _stream_epoch(model, table, args, progress, epoch)
            progress.report_epoch(epoch, args.epochs, loss)
            if stopper.should_stop(loss):
                break
    return epoch, loss


def _stream_epoch(model, table, args, progress, epoch):
    """Make one pass over the table; return the mean loss of its rows."""
    loss_sum = 0.0
    n_rows = 0
    for chunk in table.iter_chunks(args.chunk_rows):
        model.partial_fit(chunk)
        loss_sum += model.loss_curve_[-1] * chunk.shape[0]
        n_rows += chunk.shape[0]
        fraction = _fraction_done(epoch, args.epochs, n_rows, table.estimated_rows())
        progress.report_rows(epoch, args.epochs, n_rows, fraction)
    if n_rows == 0:
        raise DataError(f"{table.name}: the file has no data rows.")
    return loss_sum / n_rows


def _fraction_done(epoch, n_epochs, rows_done, rows_per_epoch):
    rows_per_epoch = max(rows_per_epoch, rows_done, 1)
    return ((epoch - 1) + rows_done / rows_per_epoch) / n_epochs


class _LossStopper:
    """The stopping rule of ``fit`` applied to the mean loss of each pass."""

    def __init__(self, tol, n_iter_no_change):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.best_loss = np.inf
        self.no_improvement_count = 0

    def should_stop(self, loss):
        if loss < self.best_loss - self.tol * abs(self.best_loss):
            self.no_improvement_count = 0
        else:
            self.no_improvement_count += 1
        self.best_loss = min(self.best_loss, loss)
        return self.no_improvement_count >= self.n_iter_no_change


def _save_model(model, path):
    with atomic_output(path) as file:
        joblib.dump(model, file)


def _print_fit_summary(model, table, args, mode, epochs_and_loss, seconds):
    n_epochs, final_loss = epochs_and_loss
    n_rows = table.estimated_rows()
    print(
        f"Fitted KSparseAutoencoder(n_components={model.n_components}, "
        f"{_format_k(model)}) on {n_rows} rows x {table.n_features} columns of "
        f"{table.name} ({mode}): {_count(n_epochs, 'epoch')} "
        f"in {_format_seconds(seconds)}, "
        f"final training loss {final_loss:.6g}, "
        f"{_count(model.n_dead_components_, 'dead unit')}. Saved to {args.model}."
    )


def _count(number, noun):
    """Return ``number`` and ``noun``, with the plural s unless number is 1."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _format_k(model):
    """Return ``k=K`` for the summary, with the k used when it was clamped."""
    if model.k > model.n_components:
        return f"k={model.k} reduced to {model.n_components}"
    return f"k={model.k}"


# ----------------------------------------------------------------------
# transform
# ----------------------------------------------------------------------


def run_transform(args):
    """Encode ``args.data`` with the model at ``args.model`` into ``args.output``."""
    _reject_overwrite(args.output, "output", "codes", model=args.model, data=args.data)
    if not args.output.endswith(".npz"):
        raise DataError(
            f"{args.output}: the codes are written as a SciPy sparse .npz "
            "archive, so the output path must end in .npz."
        )
    check_writable(args.output)
    model = _load_model(args.model)
    table = open_table(args.data)
    _check_width(model, table, args.model)
    progress = _Progress(sys.stderr, args.quiet)
    codes = _transform_chunks(model, table, args.chunk_rows, progress)
    _save_codes(codes, args.output)
    _print_transform_summary(codes, args.output, progress.elapsed())
    return 0


# First bytes of the files that 'fit' and 'transform' read or write as data.
_DATA_FILE_SIGNATURES = {
    b"\x93NUMPY": "a NumPy .npy array",
    b"PK\x03\x04": "a zip archive such as NumPy's .npz",
}


def _load_model(path):
    check_readable(path)
    with open(path, "rb") as file:
        head = file.read(8)
    for signature, kind in _DATA_FILE_SIGNATURES.items():
        if head.startswith(signature):
            raise CommandError(
                f"{path}: is {kind}, not a model. Pass the file written by 'fit' "
                "as --model and the data as the positional argument."
            )
    try:
        model = joblib.load(path)
    # Unpickling a damaged or foreign file can raise nearly any exception type.
    except Exception as error:
        detail = str(error)
        if len(detail) > 80:
            detail = detail[:77] + "..."
        raise CommandError(
            f"{path}: cannot load the model ({type(error).__name__}: {detail}). "
            "Pass a file written by 'fit'."
        ) from error
    if not isinstance(model, KSparseAutoencoder):
        raise CommandError(
            f"{path}: contains a {type(model).__name__}, not a KSparseAutoencoder. "
            "Pass a file written by 'fit'."
        )
    try:
        check_is_fitted(model)
    except NotFittedError as error:
        raise CommandError(
            f"{path}: the model is not fitted. Pass a file written by 'fit'."
        ) from error
    return model


def _check_width(model, table, model_path):
    if table.n_features != model.n_features_in_:
        raise CommandError(
            f"{table.name} has {_count(table.n_features, 'column')}, but the "
            f"model in {model_path} was fitted on "
            f"{_count(model.n_features_in_, 'column')}. Encode "
            "data with the same columns as the training data."
        )


def _transform_chunks(model, table, chunk_rows, progress):
    """Encode the table chunk by chunk and stack the codes into one CSR matrix."""
    model.set_params(sparse_output=True)
    pieces = []
    n_rows = 0
    for chunk in table.iter_chunks(chunk_rows):
        pieces.append(model.transform(chunk))
        n_rows += chunk.shape[0]
        fraction = n_rows / max(table.estimated_rows(), n_rows, 1)
        progress.report_rows(None, None, n_rows, fraction)
    if not pieces:
        raise DataError(f"{table.name}: the file has no data rows.")
    return sp.vstack(pieces, format="csr")


def _save_codes(codes, path):
    with atomic_output(path) as file:
        sp.save_npz(file, codes)


def _print_transform_summary(codes, path, seconds):
    nonzeros = codes.getnnz(axis=1)
    print(
        f"Wrote {codes.shape[0]} x {codes.shape[1]} CSR codes to {path} in "
        f"{_format_seconds(seconds)}: {nonzeros.mean():.1f} nonzeros per row "
        f"on average, at most {nonzeros.max()}."
    )


# ----------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------


class _Progress:
    """Progress lines on stderr: epoch, loss, elapsed and estimated remaining
    time."""

    def __init__(self, stream, quiet, interval=_PROGRESS_INTERVAL):
        self.stream = stream
        self.quiet = quiet
        self.interval = interval
        self.start = time.perf_counter()
        self.last_report = self.start

    def elapsed(self):
        return time.perf_counter() - self.start

    def remaining(self, fraction):
        """Estimate the remaining seconds from the fraction of work done."""
        if fraction <= 0:
            return None
        return self.elapsed() * (1 - min(fraction, 1.0)) / fraction

    def report_epoch(self, epoch, n_epochs, loss):
        fraction = epoch / n_epochs
        self._write(f"epoch {epoch}/{n_epochs}, loss {loss:.6g}", fraction)

    def report_rows(self, epoch, n_epochs, n_rows, fraction):
        """Report rows done within a pass, at most once per ``interval``."""
        if time.perf_counter() - self.last_report < self.interval:
            return
        text = f"{n_rows} rows"
        if epoch is not None:
            text = f"epoch {epoch}/{n_epochs}, {text}"
        self._write(text, fraction)

    def report_line(self, text, fraction):
        self._write(text, fraction)

    def _write(self, text, fraction):
        self.last_report = time.perf_counter()
        if self.quiet:
            return
        remaining = self.remaining(fraction)
        left = "unknown" if remaining is None else _format_seconds(remaining)
        print(
            f"{text}, elapsed {_format_seconds(self.elapsed())}, "
            f"remaining about {left}",
            file=self.stream,
            flush=True,
        )


class _EpochLineForwarder(io.TextIOBase):
    """A text stream that turns the per-epoch lines of ``fit`` into progress.

    Each complete line written to it counts as one epoch and goes to
    ``progress`` with the elapsed time. The remaining time is estimated for all
    ``n_epochs``, although ``fit`` stops earlier when the loss converges.
    """

    def __init__(self, progress, n_epochs):
        self.progress = progress
        self.n_epochs = n_epochs
        self.n_lines = 0
        self.pending = ""

    def writable(self):
        return True

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._forward(line)
        return len(text)

    def flush_pending(self):
        if self.pending:
            self._forward(self.pending)
            self.pending = ""

    def _forward(self, line):
        if not line.strip():
            return
        self.n_lines += 1
        self.progress.report_line(line.strip(), self.n_lines / self.n_epochs)


def _format_seconds(seconds):
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    if minutes < 120:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
