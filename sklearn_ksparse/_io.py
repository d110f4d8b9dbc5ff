"""Readers for numeric tables on disk (CSV, ``.npy``, ``.npz``) and atomic writes.

A table is read whole or in chunks of rows. Chunked reading keeps memory bounded
by one chunk: ``.npy`` files are memory-mapped, dense arrays in C order are read
from ``.npz`` archives row by row, and CSV files are parsed chunk by chunk, with
pandas when it is installed and with the :mod:`csv` module otherwise. Sparse
matrices and arrays in Fortran order in ``.npz`` archives are loaded whole.
Every chunk is checked for non-numeric, missing, NaN and infinite values, and the
error names the offending row and column.
"""

import codecs
import csv
import math
import os
import re
import stat
import tempfile
import warnings
import zipfile
import zlib
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp

# Rows sampled at the top of a CSV file to estimate its number of rows.
_SAMPLE_LINES = 1000
_CSV_DELIMITERS = ",;\t"


class DataError(ValueError):
    """Raised when an input file is missing, unreadable or not a numeric table."""


def open_table(path):
    """Open the numeric table stored at ``path``, choosing the reader by suffix.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.csv`` (or ``.txt``/``.tsv``) file, a ``.npy`` array or a ``.npz``
        archive written by :func:`numpy.savez` or :func:`scipy.sparse.save_npz`.

    Returns
    -------
    table : ArrayTable or CsvTable
        The opened table; nothing but its first lines is read yet.

    Raises
    ------
    DataError
        If the file is missing, unreadable or not a two-dimensional numeric table.
    """
    path = os.fspath(path)
    check_readable(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npy":
        return ArrayTable(_load_npy(path), path)
    if suffix == ".npz":
        return ArrayTable(_load_npz(path), path)
    return CsvTable(path)


def check_readable(path):
    """Raise :class:`DataError` unless ``path`` names a readable file."""
    if not path:
        raise DataError("the input path is empty; pass a file name.")
    if not os.path.exists(path):
        raise DataError(f"{path}: file not found.")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, expected a data file.")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied; the file is not readable.")


def _load_npy(path):
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, OverflowError) as error:
        # mmap raises OverflowError for a header shape such as (30, -4).
        raise DataError(
            f"{path}: not a readable .npy file ({_describe_error(error)})."
        ) from error
    if not isinstance(data, np.ndarray):
        # np.load opens any zip archive as an NpzFile, whatever its suffix.
        data.close()
        raise DataError(
            f"{path}: the file is an .npz archive, not an .npy array. Rename it "
            "to end in .npz."
        )
    return data


# The arrays that scipy.sparse.save_npz writes in every sparse format.
_SPARSE_ARCHIVE_NAMES = {"format", "shape", "data"}


def _load_npz(path):
    """Open the array of an ``.npz`` archive: a saved sparse matrix, ``X``, or
    the archive's only array.

    A dense array in C order is returned as an :class:`NpzMemberArray`, which
    reads rows from the archive only when they are sliced. A sparse matrix or
    an array in Fortran order is loaded whole.
    """
    _check_zip_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {_array_name(member): member for member in archive.namelist()}
            for info in archive.infolist():
                _check_member_supported(path, archive, info)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(
            f"{path}: not a readable .npz file ({_describe_error(error)})."
        ) from error
    if _SPARSE_ARCHIVE_NAMES <= members.keys():
        return _load_sparse_npz(path, members.keys())
    if "X" in members:
        return _open_npz_member(path, members["X"])
    if len(members) == 1:
        return _open_npz_member(path, next(iter(members.values())))
    raise DataError(
        f"{path}: the archive contains the arrays {list(members)}; store the data "
        "under the name 'X' or as the only array."
    )


# The general purpose flag bit that marks an encrypted zip member.
_ZIP_ENCRYPTED_FLAG = 0x1


def _check_member_supported(path, archive, info):
    """Raise DataError if :mod:`zipfile` cannot read the member ``info``.

    Archives written by numpy.savez never contain such members, but other zip
    tools can write encrypted members and compression methods, such as
    Deflate64, that zipfile rejects.
    """
    rewrite = "Write the archive again with numpy.savez or numpy.savez_compressed."
    if info.flag_bits & _ZIP_ENCRYPTED_FLAG:
        raise DataError(
            f"{path}: the archive member {info.filename!r} is encrypted, and "
            f"encrypted .npz archives are not supported. {rewrite}"
        )
    try:
        # Opening a member reads its local header and fails before any data
        # is read when the compression method is not supported.
        archive.open(info).close()
    except NotImplementedError as error:
        raise DataError(
            f"{path}: the archive member {info.filename!r} uses a compression "
            f"method or zip feature that Python's zipfile module cannot read "
            f"(compression method {info.compress_type}: {error}). {rewrite}"
        ) from error


def _array_name(member):
    """Return the name numpy.savez gave an array, from its member in the zip."""
    return member.removesuffix(".npy")


def _load_sparse_npz(path, names):
    """Load the sparse matrix saved in the archive at ``path`` as CSR.

    ``names`` are the array names in the archive.
    """
    try:
        matrix = sp.load_npz(path)
    except KeyError as error:
        raise DataError(_missing_sparse_array_message(path, names, error)) from error
    except (
        ValueError, OSError, zipfile.BadZipFile, NotImplementedError,
        AttributeError, TypeError,
    ) as error:  # fmt: skip
        # load_npz raises NotImplementedError for formats such as "lil",
        # AttributeError for a numeric "format" and TypeError for a float shape.
        raise DataError(
            f"{path}: not a readable .npz file ({_describe_error(error)})."
        ) from error
    # load_npz does not check the indices, and scipy's compiled routines read
    # and write out of bounds when an index is out of range, so a damaged
    # archive crashes the process unless it is checked before any conversion.
    _check_sparse_structure(matrix, path)
    # COO, CSC and the other formats become CSR, which slices rows.
    return matrix.tocsr()


# The arrays besides "format", "shape" and "data" that scipy.sparse.load_npz
# reads for each sparse format. A COO matrix may store "coords" in place of
# "row" and "col".
_SPARSE_FORMAT_ARRAYS = {
    "csr": ("indices", "indptr"),
    "csc": ("indices", "indptr"),
    "bsr": ("indices", "indptr"),
    "dia": ("offsets",),
    "coo": ("row", "col"),
}


def _missing_sparse_array_message(path, names, error):
    """Return the message for a sparse archive without an array it needs.

    ``error`` is the KeyError from load_npz, whose text is used when the
    missing arrays cannot be named from ``_SPARSE_FORMAT_ARRAYS``.
    """
    with np.load(path, allow_pickle=False) as archive:
        sparse_format = archive["format"].item()
    if isinstance(sparse_format, bytes):
        sparse_format = sparse_format.decode("ascii", errors="replace")
    expected = _SPARSE_FORMAT_ARRAYS.get(sparse_format, ())
    missing = [name for name in expected if name not in names]
    if missing:
        noun = "array" if len(missing) == 1 else "arrays"
        missing_text = f"the {noun} {' and '.join(map(repr, missing))}"
    else:
        missing_text = f"an array ({error.args[0] if error.args else error})"
    return (
        f"{path}: the sparse {sparse_format} archive is missing {missing_text}. Write "
        "the matrix again with scipy.sparse.save_npz."
    )


def _check_sparse_structure(matrix, path):
    """Raise DataError unless the indices of ``matrix`` are consistent.

    Checks the index arrays of CSR, CSC and BSR matrices. The COO constructor
    checks its own indices, and the conversion of a DIA matrix to CSR skips
    diagonals outside the matrix.
    """
    if not hasattr(matrix, "check_format"):
        return
    try:
        matrix.check_format(full_check=True)
    except ValueError as error:
        raise DataError(
            f"{path}: the sparse matrix is corrupt, because its index arrays are "
            f"inconsistent ({error}). Write it again with scipy.sparse.save_npz."
        ) from error


def _open_npz_member(path, member):
    """Return the array in ``member`` of the archive at ``path``.

    Only the ``.npy`` header is read for an array in C order. Other arrays are
    loaded whole, because their rows are not contiguous in the member.
    """
    archive = zipfile.ZipFile(path)
    try:
        file = archive.open(member)
        header = _read_npy_header(file)
        if header is not None:
            shape, fortran_order, dtype = header
            _check_header_shape(shape)
            if not fortran_order:
                return NpzMemberArray(archive, file, shape, dtype, f"{path}:{member}")
        file.close()
        with archive, archive.open(member) as whole:
            return np.lib.format.read_array(whole, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        archive.close()
        raise DataError(
            f"{path}: the archive member {member!r} is not a readable .npy array "
            f"({_describe_error(error)})."
        ) from error


def _read_npy_header(file):
    """Read the header of an ``.npy`` file object up to the first row.

    Returns ``(shape, fortran_order, dtype)``, or None for format version 3.0
    and later, which NumPy 2.4 has no public header reader for.
    """
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(file)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(file)
    return None


def _check_header_shape(shape):
    # read_array rejects a negative dimension, but the header readers do not,
    # and a row count of -1 would reach the reader of rows unchecked.
    if any(length < 0 for length in shape):
        raise ValueError(
            f"invalid shape {tuple(shape)} in the array header, because a "
            "dimension is negative"
        )


class NpzMemberArray:
    """A C-order array stored as an ``.npy`` member of an ``.npz`` archive.

    Slicing rows reads only those rows from the archive, so reading the rows
    in order decompresses a compressed member once. A slice that starts
    before the last one read decompresses the member again from its start.

    Parameters
    ----------
    archive : zipfile.ZipFile
        The open archive, closed by :meth:`close`.
    file : file object
        The open member, positioned at the first byte of the array data.
    shape : tuple of int
        Shape of the array, from the ``.npy`` header.
    dtype : numpy.dtype
        Data type of the array, from the ``.npy`` header.
    name : str
        The archive path and member name, used in error messages.
    """

    def __init__(self, archive, file, shape, dtype, name):
        self.shape = tuple(shape)
        self.ndim = len(self.shape)
        self.dtype = dtype
        self.name = name
        self._archive = archive
        self._file = file
        self._data_offset = file.tell()

    def __getitem__(self, rows):
        """Read the rows of a slice with step 1 into a read-only array."""
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError(f"expected a row slice with step 1, got {rows}")
        n_rows = max(stop - start, 0)
        row_shape = self.shape[1:]
        row_nbytes = math.prod(row_shape) * self.dtype.itemsize
        try:
            self._file.seek(self._data_offset + start * row_nbytes)
            buffer = self._file.read(n_rows * row_nbytes)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise DataError(
                f"{self.name}: failed to read rows {start} to {stop - 1} "
                f"({_describe_error(error)}). Check the archive, or write it again."
            ) from error
        if len(buffer) != n_rows * row_nbytes:
            first_missing = start + len(buffer) // max(row_nbytes, 1)
            raise DataError(
                f"{self.name}: the member ends before row {first_missing}, so the "
                "archive is truncated. Write it again with numpy.savez."
            )
        return np.frombuffer(buffer, dtype=self.dtype).reshape((n_rows, *row_shape))

    def close(self):
        """Close the member and the archive."""
        self._file.close()
        self._archive.close()


def _describe_error(error):
    """Return the text of ``error``, or its type name when the text is empty.

    An EOFError from a member that ends early, for one, has no text.
    """
    return str(error) or type(error).__name__


def _check_zip_archive(path):
    # np.load reads a file that is neither a zip archive nor an .npy array as a
    # pickle, and its error suggests allow_pickle=True, which is unsafe.
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path}: not a zip archive, or a truncated one, so not an .npz file "
            "written by numpy.savez or scipy.sparse.save_npz. Pass such an "
            "archive, or a CSV or .npy file named with its suffix."
        )


class ArrayTable:
    """A table held by a NumPy array, a memory-mapped ``.npy`` file, an array
    read by rows from an ``.npz`` archive, or a CSR matrix.

    Parameters
    ----------
    data : ndarray, memmap, NpzMemberArray or CSR matrix
        The table, of shape (n_rows, n_features). Rows are copied into memory
        only when read.
    name : str
        Name of the source used in error messages, usually its path.
    """

    def __init__(self, data, name):
        _check_array_shape(data, name)
        self.data = data
        self.name = name
        self.n_rows, self.n_features = data.shape
        self.column_names = None

    @property
    def dtype(self):
        """Float dtype of the rows returned: float32 is kept, others become
        float64."""
        return np.float32 if self.data.dtype == np.float32 else np.float64

    def estimated_nbytes(self):
        """Return the size in bytes of the whole table as a dense float array."""
        return self.n_rows * self.n_features * np.dtype(self.dtype).itemsize

    def estimated_rows(self):
        """Return the number of rows."""
        return self.n_rows

    def read(self):
        """Return the whole table, checked to be finite."""
        return self._rows(0, self.n_rows)

    def iter_chunks(self, chunk_rows):
        """Yield the table in chunks of at most ``chunk_rows`` rows."""
        for start in range(0, self.n_rows, chunk_rows):
            yield self._rows(start, min(start + chunk_rows, self.n_rows))

    def _rows(self, start, stop):
        chunk = self.data[start:stop]
        if sp.issparse(chunk):
            chunk = chunk.astype(self.dtype)
            _check_finite_sparse(chunk, start, self.name)
            return chunk
        chunk = np.asarray(chunk, dtype=self.dtype)
        _check_finite_dense(chunk, start, self.name)
        return chunk


def _check_array_shape(data, name):
    if data.dtype.names is not None:
        raise DataError(
            f"{name}: expected a plain numeric array, got the structured dtype "
            f"{data.dtype}. Save a two-dimensional numeric array instead, for "
            "example converted with "
            "numpy.lib.recfunctions.structured_to_unstructured."
        )
    if data.ndim != 2:
        raise DataError(
            f"{name}: expected a two-dimensional array (rows x features), got "
            f"an array of shape {data.shape}."
        )
    kind = data.dtype.kind
    if kind not in "iuf":
        raise DataError(
            f"{name}: expected a numeric array of integers or floats, got dtype "
            f"{data.dtype}."
        )
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise DataError(f"{name}: the array of shape {data.shape} is empty.")


def _check_finite_dense(chunk, first_row, name):
    if np.isfinite(chunk).all():
        return
    row, column = np.argwhere(~np.isfinite(chunk))[0]
    raise DataError(
        f"{name}: row {first_row + row}, column {column} (0-based indices) is "
        f"{chunk[row, column]}; the data must be finite. Remove or impute the value."
    )


def _check_finite_sparse(chunk, first_row, name):
    bad = np.flatnonzero(~np.isfinite(chunk.data))
    if bad.size == 0:
        return
    row = int(np.searchsorted(chunk.indptr, bad[0], side="right")) - 1
    column = chunk.indices[bad[0]]
    raise DataError(
        f"{name}: row {first_row + row}, column {column} (0-based indices) is "
        f"{chunk.data[bad[0]]}; the data must be finite. Remove or impute the value."
    )


class CsvTable:
    """A numeric CSV file, read whole or in chunks of rows.

    The delimiter (comma, semicolon or tab) is detected from the first lines.
    The first line is a header when at least one of its fields is not a number;
    a header of numbers only is read as data.

    Parameters
    ----------
    path : str
        Path of the CSV file.
    """

    dtype = np.float64

    def __init__(self, path):
        self.name = path
        sample = _read_sample(path)
        self.delimiter = _detect_delimiter(sample)
        # Reading the first record from the sample, not the first line, keeps
        # a quoted header field with a line break in one piece.
        first = next(csv.reader(sample, delimiter=self.delimiter), None)
        if not first or not any(field.strip() for field in first):
            raise DataError(_blank_first_line_message(path, first))
        self.has_header = not all(_is_number(field) for field in first)
        # Spreadsheet exports often end every line, the header included, with
        # a delimiter. The empty last field of the first line then counts as
        # no column, whether the line is a header or data.
        self.first_line_has_trailing_delimiter = (
            len(first) > 1 and not first[-1].strip()
        )
        if self.first_line_has_trailing_delimiter:
            first = first[:-1]
        self.column_names = (
            [name.strip() for name in first] if self.has_header else None
        )
        self.n_features = len(first)
        # Set to the exact count once a whole pass over the file has finished.
        self.n_rows = None
        self._estimated_rows = _estimate_rows(path, sample, self.has_header)

    def estimated_nbytes(self):
        """Return the estimated size in bytes of the table as a float64 array.

        The number of rows is estimated from the file size and the mean length
        of the first lines, until a full pass has counted them.
        """
        n_rows = self.n_rows if self.n_rows is not None else self._estimated_rows
        return n_rows * self.n_features * 8

    def estimated_rows(self):
        """Return the number of rows, exact after one full pass, estimated before."""
        return self.n_rows if self.n_rows is not None else self._estimated_rows

    def read(self):
        """Return the whole table as a float64 array, checked to be numeric and
        finite."""
        chunks = list(self.iter_chunks(chunk_rows=65536))
        if not chunks:
            raise DataError(f"{self.name}: the file has a header but no data rows.")
        return np.concatenate(chunks)

    def iter_chunks(self, chunk_rows):
        """Yield float64 arrays of at most ``chunk_rows`` rows, in file order."""
        n_rows = 0
        for chunk in self._parse_chunks(chunk_rows):
            n_rows += chunk.shape[0]
            yield chunk
        self.n_rows = n_rows

    def _parse_chunks(self, chunk_rows):
        try:
            import pandas  # noqa: F401
        except ImportError:
            return _parse_with_csv_module(self, chunk_rows)
        return _parse_with_pandas(self, chunk_rows)

    def line_number(self, row):
        """Return the 1-based line of the file where data row ``row`` (0-based)
        starts.

        Blank lines do not count as rows, as in both parsers, and a quoted
        field may span lines. The file is read again up to that row, so this
        is meant for error messages.
        """
        for index, (line, _) in enumerate(self.data_lines()):
            if index == row:
                return line
        # Not reached unless the file changed since it was parsed. A message
        # with an estimated line beats a second error that hides the first.
        return row + 1 + int(self.has_header)

    def data_lines(self):
        """Yield the 1-based first line and the fields of each data row.

        Reads the file with the standard library, skipping the header and
        blank lines, so it is meant for messages rather than for the data.
        """
        with open(self.name, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file, delimiter=self.delimiter, skipinitialspace=True)
            if self.has_header:
                next(reader, None)
            start_line = reader.line_num + 1
            for fields in reader:
                if not _is_blank(fields):
                    yield start_line, fields
                start_line = reader.line_num + 1

    def column_label(self, column):
        """Return a column's name for messages: its header or its 1-based
        position."""
        if self.column_names is not None:
            return f"column {column + 1} ({self.column_names[column]!r})"
        return f"column {column + 1}"


def _blank_first_line_message(path, fields):
    """Return the message for a first line without any column name or value."""
    if fields and len(fields) > 1:
        return (
            f"{path}: the first line contains only delimiters. Put the column "
            "names, or the first row of values, on the first line."
        )
    return f"{path}: the file is empty or its first line is blank."


def _read_sample(path):
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            return [line for _, line in zip(range(_SAMPLE_LINES), file, strict=False)]
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not a UTF-8 text file; expected a CSV file, or a .npy or "
            ".npz file named with its suffix."
        ) from error
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror}).") from error


def _detect_delimiter(sample):
    # Blank lines would make the sniffer see a one-column file.
    lines = [line for line in sample if line.strip()][:20]
    try:
        return csv.Sniffer().sniff("".join(lines), _CSV_DELIMITERS).delimiter
    except csv.Error:
        # The sniffer fails on trailing delimiters, for one. The delimiter
        # that occurs most often in the first line is the next best guess.
        first = lines[0] if lines else ""
        best = max(_CSV_DELIMITERS, key=first.count)
        return best if first.count(best) else ","


def _is_blank(fields):
    """Return whether a parsed CSV line is empty or only spaces and tabs.

    pandas skips such lines, so the standard-library parser and the line
    numbers in messages skip them too.
    """
    return not fields or (len(fields) == 1 and not fields[0].strip(" \t"))


# The text that pandas.read_csv reads as a missing value by default, compared
# with ``pandas._libs.parsers.STR_NA_VALUES`` of pandas 3.1.1, so that both
# parsers report it the same.
_MISSING_VALUE_TEXT = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
     "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
     "nan", "null"]
)  # fmt: skip


# Decimal and exponent notation and infinity, in ASCII, as pandas 3.1.1 reads
# numbers. NaN is only the missing-value text above. Python's float() also
# takes underscores, non-ASCII digits, surrounding Unicode whitespace and
# spellings such as "NAN" or "+nan".
_NUMBER_PATTERN = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?)",
    re.IGNORECASE | re.ASCII,
)


# The whitespace that pandas 3.1.1 allows around a number, the C locale's
# isspace() set. A field of only these characters is text to pandas.
_NUMBER_PADDING = " \t\n\r\v\f"


def _parse_number(field):
    """Return the float value of a CSV field, NaN for missing-value text.

    Raises ValueError for text that ``_NUMBER_PATTERN`` rejects, as pandas
    does, including a field of only whitespace, which only quotes or a tab
    can produce because both readers skip the spaces after a delimiter.
    """
    # pandas matches the missing-value text, "" included, before it strips
    # the padding.
    if field in _MISSING_VALUE_TEXT:
        return math.nan
    text = field.strip(_NUMBER_PADDING)
    if not _NUMBER_PATTERN.fullmatch(text):
        raise ValueError(f"not a number: {field!r}")
    return float(text)


def _is_number(field):
    """Return whether a field of the first line reads as a number or missing."""
    try:
        _parse_number(field)
    except ValueError:
        return False
    return True


def _drop_trailing_empty_field(fields, n_features):
    """Return ``fields`` without the empty field that a trailing delimiter adds.

    pandas, with ``index_col=False``, ignores a trailing delimiter on the
    first data line, and the reader falls back to the standard-library parser
    when later lines have one, so this parser ignores it on every line.
    """
    if len(fields) == n_features + 1 and not fields[-1].strip():
        return fields[:-1]
    return fields


def _estimate_rows(path, sample, has_header):
    sample_bytes = sum(len(line.encode("utf-8")) for line in sample)
    if sample_bytes == 0:
        return 0
    n_lines = math.ceil(len(sample) * os.path.getsize(path) / sample_bytes)
    return max(n_lines - int(has_header), 0)


def _starts_with_bom(path):
    with open(path, "rb") as file:
        return file.read(3) == codecs.BOM_UTF8


def _parse_with_pandas(table, chunk_rows):
    import pandas as pd

    first_row = 0
    try:
        # The reader parses the header, so it is made inside the try block.
        reader = pd.read_csv(
            table.name,
            sep=table.delimiter,
            header=0 if table.has_header else None,
            # Without this, pandas turns extra leading fields into the row
            # index when the header is shorter than the rows, and drops them.
            index_col=False,
            # A byte order mark would otherwise make the first field
            # non-numeric. The default codec is kept for other files, because
            # pandas traces more memory per chunk with an explicit "utf-8-sig".
            encoding="utf-8-sig" if _starts_with_bom(table.name) else None,
            chunksize=chunk_rows,
            skipinitialspace=True,
            low_memory=False,
        )
        with reader:
            while (frame := _next_frame(reader)) is not None:
                yield _frame_to_array(table, frame, first_row)
                first_row += frame.shape[0]
    except pd.errors.ParserWarning:
        # Rows are longer than the header, and pandas would drop the extra fields.
        yield from _parse_rest_after_width_error(table, chunk_rows, first_row)
    except (pd.errors.ParserError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        if isinstance(error, pd.errors.ParserError) and "fields in line" in str(error):
            yield from _parse_rest_after_width_error(table, chunk_rows, first_row)
            return
        _raise_unclosed_quote(table)
        raise DataError(f"{table.name}: invalid CSV ({str(error).strip()}).") from error


def _next_frame(reader):
    """Return the next chunk of a pandas reader, or None at the end.

    pandas only warns when rows have more fields than the header, and then
    drops the extra fields, so that warning is raised as an error here.
    """
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        return next(reader, None)


def _parse_rest_after_width_error(table, chunk_rows, first_row):
    """Handle a line that pandas found of the wrong width.

    Raises a DataError naming the first data line of the wrong width, because
    the line in pandas' own message misses quoted line breaks. If the only
    extra fields are trailing delimiters, which pandas ignores on the first
    data line but not on later ones, the standard-library parser reads the
    rows from ``first_row`` on instead.
    """
    _raise_wrong_width(table)
    yield from _parse_with_csv_module(table, chunk_rows, first_row)


def _raise_wrong_width(table, first_row=0, n_rows=None):
    """Raise a DataError naming the first data line of the wrong width, if any,
    among the data rows from ``first_row`` on (``n_rows`` of them, or all).

    A trailing delimiter does not count as a field. The standard-library
    parser rejects such a line as it reads it, and pandas fills a narrow line
    with missing values, so the pandas reader calls this to give the same
    message.
    """
    stop = None if n_rows is None else first_row + n_rows
    for row, (line, fields) in enumerate(table.data_lines()):
        if stop is not None and row >= stop:
            return
        fields = _drop_trailing_empty_field(fields, table.n_features)
        if row >= first_row and len(fields) != table.n_features:
            raise _width_error(table, len(fields), f"on line {line}")


def _raise_unclosed_quote(table):
    """Raise a DataError if a quoted field runs on to the end of the file.

    Without the closing quote, pandas reports the end of the file, and the
    standard-library parser reads the rest of the file as one field.
    """
    with open(table.name, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(
            file, delimiter=table.delimiter, skipinitialspace=True, strict=True
        )
        start_line = 1
        try:
            for _ in reader:
                start_line = reader.line_num + 1
        except csv.Error as error:
            # Strict parsing raises other errors too, such as text after a
            # closing quote, which the caller's message covers.
            if "unexpected end of data" not in str(error):
                return
            raise DataError(
                f"{table.name}: a quoted field in the row that starts on line "
                f"{start_line} has no closing quote. Close the quote, or remove "
                "the stray quote character."
            ) from None


def _width_error(table, n_fields, where):
    """Return the DataError for a line of ``n_fields`` fields at ``where``."""
    fields = "field" if table.n_features == 1 else "fields"
    return DataError(
        f"{table.name}: expected {table.n_features} {fields} per line, found "
        f"{n_fields} {where}. Give every line the fields of the first line, "
        "with an empty field for a missing value."
    )


def _frame_to_array(table, frame, first_row):
    import pandas as pd

    if frame.shape[0] == 0:
        raise DataError(f"{table.name}: the file has a header but no data rows.")
    trailing = table.first_line_has_trailing_delimiter
    if trailing and frame.shape[1] == table.n_features + 1:
        # pandas gives the first line's empty last field a column, which must
        # stay empty.
        if frame.iloc[:, -1].notna().any():
            _raise_wrong_width(table)
        frame = frame.iloc[:, :-1]
    if frame.shape[1] != table.n_features:
        where = f"near line {table.line_number(first_row)}"
        raise _width_error(table, frame.shape[1], where)
    if frame.isna().to_numpy().any():
        # pandas fills a line with fewer fields than the header with missing
        # values, so a narrow line is found before the values are checked.
        _raise_wrong_width(table, first_row, frame.shape[0])
    for column in range(frame.shape[1]):
        values = frame.iloc[:, column]
        if pd.api.types.is_bool_dtype(values):
            _raise_non_numeric(table, values, [0], column, first_row)
        if not pd.api.types.is_numeric_dtype(values):
            # pandas leaves integers beyond 64 bits, or a column mixing -1 with
            # 2**64 - 1, as text, but to_numeric still reads them as floats.
            numbers = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero((numbers.isna() & values.notna()).to_numpy())
            if bad.size:
                _raise_non_numeric(table, values, bad, column, first_row)
            # The chunk belongs to this function, so it is changed in place.
            frame.isetitem(column, numbers)
    array = frame.to_numpy(dtype=np.float64)
    _check_finite_csv(table, array, first_row)
    return array


def _raise_non_numeric(table, values, bad_rows, column, first_row):
    row = int(bad_rows[0])
    raise DataError(
        f"{table.name}: {table.column_label(column)} is not numeric; line "
        f"{table.line_number(first_row + row)} contains {str(values.iloc[row])!r}. "
        "Drop or encode non-numeric columns first."
    )


def _check_finite_csv(table, array, first_row):
    finite = np.isfinite(array)
    if finite.all():
        return
    row, column = np.argwhere(~finite)[0]
    value = array[row, column]
    what = "missing or NaN" if np.isnan(value) else f"{value}"
    raise DataError(
        f"{table.name}: line {table.line_number(first_row + row)}, "
        f"{table.column_label(column)} is {what}; the data must be finite. "
        "Remove or impute the value."
    )


def _parse_with_csv_module(table, chunk_rows, first_row=0):
    """Parse the file with the standard library, for installations without
    pandas, from data row ``first_row`` on."""
    with open(table.name, newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file, delimiter=table.delimiter, skipinitialspace=True)
        if table.has_header:
            next(reader)
        rows = []
        n_to_skip = first_row
        for fields in reader:
            if _is_blank(fields):
                continue
            if n_to_skip:
                n_to_skip -= 1
                continue
            rows.append(_parse_fields(table, fields, first_row + len(rows)))
            if len(rows) == chunk_rows:
                yield _rows_to_array(table, rows, first_row)
                first_row += len(rows)
                rows = []
        if rows:
            yield _rows_to_array(table, rows, first_row)


def _parse_fields(table, fields, row):
    fields = _drop_trailing_empty_field(fields, table.n_features)
    if len(fields) != table.n_features:
        # A quote without its closing quote swallows the rest of the file.
        _raise_unclosed_quote(table)
        raise _width_error(table, len(fields), f"on line {table.line_number(row)}")
    values = []
    for column, field in enumerate(fields):
        try:
            values.append(_parse_number(field))
        except ValueError:
            _raise_unclosed_quote(table)
            raise DataError(
                f"{table.name}: {table.column_label(column)} is not numeric; line "
                f"{table.line_number(row)} contains {field!r}. Drop or encode "
                "non-numeric columns first."
            ) from None
    return values


def _rows_to_array(table, rows, first_row):
    array = np.array(rows, dtype=np.float64)
    _check_finite_csv(table, array, first_row)
    return array


def check_writable(path):
    """Raise :class:`DataError` unless a file can be created at ``path``.

    Called before long work so that a run does not fail only at its end. A
    symlink is followed, so the checks apply to the file it points to.
    """
    path = os.fspath(path)
    _check_path_not_empty(path)
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise DataError(f"{path}: the directory {directory} does not exist.")
    if not os.access(directory, os.W_OK):
        raise DataError(f"{path}: permission denied; cannot write in {directory}.")
    if os.path.isdir(target) or path.endswith(("/", os.sep)):
        raise DataError(f"{path}: is a directory, expected a file name.")
    _check_name_length(path, target, directory)
    _existing_permissions(path, target)
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise DataError(
            f"{path}: permission denied; the file is write-protected. Make it "
            "writable, or pass another path."
        )


def _check_name_length(path, target, directory):
    """Raise DataError if the file name is longer than the file system allows."""
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        # pathconf is missing on some systems; writing then reports the error.
        return
    length = len(os.fsencode(os.path.basename(target)))
    if length > limit:
        raise DataError(
            f"{path}: the file name is {length} bytes long, more than the "
            f"{limit} that its file system allows. Pass a shorter name."
        )


def _existing_permissions(path, target):
    """Return the permission bits of the file at ``target``, or None if there
    is no such file.

    Raises DataError if ``target`` is a device, a FIFO or a socket, because
    replacing it with a regular file would remove it. ``path`` is the name in
    the message.
    """
    try:
        status = os.stat(target)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _write_error(path, error) from error
    kind = _special_file_kind(status.st_mode)
    if kind is not None:
        raise DataError(
            f"{path}: is {kind}, not a regular file, and the output would "
            "replace it with a regular file. Pass the path of a regular file or "
            "of a new file."
        )
    return stat.S_IMODE(status.st_mode)


def _special_file_kind(mode):
    """Return a description of a file that is neither regular nor a directory,
    or None for those two.

    A directory is left to the caller: check_writable rejects it, and
    os.replace fails on it.
    """
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _check_path_not_empty(path):
    # os.path.abspath("") is the working directory, so an empty path would
    # put the temporary file in its parent.
    if not path:
        raise DataError("the output path is empty; pass a file name.")


@contextmanager
def atomic_output(path):
    """Open a temporary file next to ``path`` and move it onto ``path`` on success.

    The body writes to the yielded binary file object. If the body raises, the
    temporary file is removed and any existing file at ``path`` is left as it
    was. The move uses :func:`os.replace`, which is atomic within one file system.

    A symlink at ``path`` is followed: the temporary file is created next to
    the file it points to and replaces that file, so the link stays a link.
    An existing file is replaced by a new one with the same permission bits.
    Other hard links to it keep the old contents.

    Raises
    ------
    DataError
        If ``path`` is empty or is a device, a FIFO or a socket, or if
        creating, writing or moving the file raises :class:`OSError`, including
        an OSError raised by the body.
    """
    path = os.fspath(path)
    _check_path_not_empty(path)
    # os.replace would replace a symlink itself, so the file it points to is
    # written instead.
    target = os.path.realpath(path)
    permissions = _existing_permissions(path, target)
    # NOTE: the owner and group of an existing file are not copied, so the new
    # file belongs to the user who runs the command.
    if permissions is None:
        # mkstemp creates the file readable by its owner only, so a new file
        # gets the permissions that a plain open() would give it.
        permissions = 0o666 & ~_current_umask()
    directory = os.path.dirname(target)
    # A short prefix keeps the temporary name within the file system's limit
    # on name length whenever the target's name is.
    prefix = f".{os.path.basename(target)[:32]}."
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=directory, prefix=prefix, suffix=".tmp"
        )
    except OSError as error:
        raise _write_error(path, error) from error
    try:
        os.chmod(temporary, permissions)
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError as error:
        _remove_if_exists(temporary)
        raise _write_error(path, error) from error
    except BaseException:
        _remove_if_exists(temporary)
        raise


def _write_error(path, error):
    reason = error.strerror or str(error)
    return DataError(
        f"{path}: failed to write the file ({reason}). Check that its directory "
        "is writable and has free space, or pass another path."
    )


def _remove_if_exists(path):
    if os.path.exists(path):
        os.unlink(path)


def _current_umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
