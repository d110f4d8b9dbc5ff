"""Top-k selection over the rows of a pre-activation matrix, and CSR assembly."""

import numpy as np
import scipy.sparse as sp

# Rows narrower than this go straight to ``np.argpartition``, because the
# group-maximum filter below only pays off once a row no longer fits the
# selection kernel's fast path. Measured with NumPy 2.4 on AVX-512, argpartition
# costs about 5 ns per element at 2048 columns and 2 ns at 512.
_MIN_COLUMNS_FOR_FILTER = 512
# Rows at least this wide, with at least _MIN_WIDTH_PER_KEPT columns per kept
# entry, take the group selection. It was measured on pre-activations of
# trained models with NumPy 2.4, AVX-512, float32 and one thread. For 2500
# MNIST rows it took 4.5 instead of 6.2 ms at (512, 16), and 14 instead of
# 19 ms at (2048, 16). For 256 nudged-digits rows at (1024, 4) it took 0.36
# instead of 0.91 ms. At (2048, 64) it took 1.07 times the filter's time.
_MIN_COLUMNS_FOR_GROUPS = 256
_MIN_WIDTH_PER_KEPT = 16


def select_topk(pre_activations, k):
    """Select the k largest entries of each row.

    Parameters
    ----------
    pre_activations : ndarray of shape (n_samples, n_components)
        Finite values.
    k : int
        Number of entries to keep per row, ``1 <= k <= n_components``.

    Returns
    -------
    indices : ndarray of shape (n_samples, k), dtype intp
        Column of each kept entry, in no particular order within a row.
    values : ndarray of shape (n_samples, k)
        The kept entries, in the order of ``indices``.
    """
    n_samples, n_components = pre_activations.shape
    if k >= n_components:
        indices = np.broadcast_to(np.arange(n_components), (n_samples, n_components))
        return np.ascontiguousarray(indices), pre_activations.copy()
    if n_components >= max(_MIN_COLUMNS_FOR_GROUPS, _MIN_WIDTH_PER_KEPT * k):
        return _select_topk_grouped(pre_activations, k)
    n_groups = max(4 * k, 32)
    if n_components < max(_MIN_COLUMNS_FOR_FILTER, 4 * n_groups):
        indices = np.argpartition(pre_activations, n_components - k, axis=1)
        indices = indices[:, n_components - k :]
        return indices, np.take_along_axis(pre_activations, indices, axis=1)
    return _select_topk_filtered(pre_activations, k, n_groups)


def _select_topk_grouped(pre_activations, k):
    """Select the top k per row among the entries of the k best column groups.

    The columns are split into interleaved groups of ``group_size`` columns.
    A valid top k lies in the k groups with the largest maxima, because an
    entry outside them is no larger than k group maxima, which are k distinct
    entries. When values tie at the k-th largest, those groups still contain
    enough of the tied entries to complete a valid top k. So the exact
    selection runs on ``k * group_size`` candidates per row instead of the
    whole row. A group size near ``sqrt(width / 2k)`` balances the cost of the
    group maxima against that of the candidates.
    """
    n_samples, n_components = pre_activations.shape
    group_size = max(2, round(np.sqrt(n_components / (2 * k))))
    n_groups = n_components // group_size
    n_grouped = n_groups * group_size
    grouped = pre_activations[:, :n_grouped].reshape(n_samples, group_size, n_groups)
    group_max = grouped.max(axis=1)
    best_groups = np.argpartition(group_max, n_groups - k, axis=1)[:, n_groups - k :]
    candidates = np.take_along_axis(grouped, best_groups[:, None, :], axis=2)
    candidates = candidates.reshape(n_samples, group_size * k)
    offsets = n_groups * np.arange(group_size)
    candidate_columns = (best_groups[:, None, :] + offsets[None, :, None]).reshape(
        n_samples, group_size * k
    )
    if n_grouped < n_components:
        # The last columns belong to no group, so they are always candidates.
        rest = n_components - n_grouped
        candidates = np.hstack([candidates, pre_activations[:, n_grouped:]])
        rest_columns = np.broadcast_to(
            np.arange(n_grouped, n_components), (n_samples, rest)
        )
        candidate_columns = np.hstack([candidate_columns, rest_columns])
    width = candidates.shape[1]
    chosen = np.argpartition(candidates, width - k, axis=1)[:, width - k :]
    indices = np.take_along_axis(candidate_columns, chosen, axis=1)
    values = np.take_along_axis(candidates, chosen, axis=1)
    return indices, values


def _select_topk_filtered(pre_activations, k, n_groups):
    """Select the top k per row after discarding entries below a cheap bound.

    The columns are split into ``n_groups`` interleaved groups. The k-th largest
    group maximum is a lower bound on the row's k-th largest entry, because k
    distinct entries reach it, so every entry of the top k survives the filter
    ``pre_activations >= bound``. Only the few survivors go through the exact
    partial selection.
    """
    n_samples, n_components = pre_activations.shape
    group_size = n_components // n_groups
    grouped = pre_activations[:, : n_groups * group_size]
    group_max = grouped.reshape(n_samples, group_size, n_groups).max(axis=1)
    bound = np.partition(group_max, n_groups - k, axis=1)[:, n_groups - k]

    survivors = pre_activations >= bound[:, None]
    counts = np.count_nonzero(survivors, axis=1)
    rows, columns = np.nonzero(survivors)
    width = int(counts.max())
    row_starts = np.zeros(n_samples, dtype=np.intp)
    np.cumsum(counts[:-1], out=row_starts[1:])
    slots = np.arange(rows.size) - np.repeat(row_starts, counts)

    candidates = np.full((n_samples, width), -np.inf, dtype=pre_activations.dtype)
    candidates[rows, slots] = pre_activations[rows, columns]
    candidate_columns = np.zeros((n_samples, width), dtype=np.intp)
    candidate_columns[rows, slots] = columns

    chosen = np.argpartition(candidates, width - k, axis=1)[:, width - k :]
    indices = np.take_along_axis(candidate_columns, chosen, axis=1)
    values = np.take_along_axis(candidates, chosen, axis=1)
    return indices, values


def apply_activation(values, activation):
    """Return the kept pre-activations after ``activation`` ("relu" or "identity")."""
    if activation == "relu":
        return np.maximum(values, 0)
    return values


def codes_to_csr(indices, values, n_components):
    """Assemble canonical CSR codes from per-row indices and values.

    Parameters
    ----------
    indices : ndarray of shape (n_samples, k)
        Columns of the kept units, in any order within a row.
    values : ndarray of shape (n_samples, k)
        Code values; exact zeros are dropped.
    n_components : int
        Number of columns of the result.

    Returns
    -------
    codes : scipy.sparse.csr_matrix of shape (n_samples, n_components)
        Sorted column indices, no explicit zeros, dtype of ``values``.
    """
    n_samples = indices.shape[0]
    order = np.argsort(indices, axis=1, kind="stable")
    indices = np.take_along_axis(indices, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    nonzero = values != 0
    indptr = np.zeros(n_samples + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(nonzero, axis=1), out=indptr[1:])
    index_dtype = np.int32 if max(n_components, indptr[-1]) < 2**31 else np.int64
    codes = sp.csr_matrix(
        (
            values[nonzero],
            indices[nonzero].astype(index_dtype, copy=False),
            indptr.astype(index_dtype, copy=False),
        ),
        shape=(n_samples, n_components),
    )
    codes.has_sorted_indices = True
    return codes


class CSRBuilder:
    """Canonical CSR codes assembled chunk by chunk in preallocated arrays.

    The data and index arrays are allocated once for ``max_row_nnz`` entries per
    row, filled chunk by chunk and shrunk in place to the number of nonzeros at
    the end, so the result is never copied as a whole.

    Parameters
    ----------
    n_rows : int
        Number of rows of the result.
    n_columns : int
        Number of columns of the result.
    max_row_nnz : int
        Upper bound on the entries of a row.
    dtype : dtype
        Dtype of the values.
    """

    def __init__(self, n_rows, n_columns, max_row_nnz, dtype):
        capacity = n_rows * max_row_nnz
        index_dtype = np.int32 if max(n_columns, capacity) < 2**31 else np.int64
        self.shape = (n_rows, n_columns)
        self.data = np.empty(capacity, dtype=dtype)
        self.indices = np.empty(capacity, dtype=index_dtype)
        self.indptr = np.zeros(n_rows + 1, dtype=index_dtype)
        self.n_filled_rows = 0

    def append(self, indices, values):
        """Append rows given as per-row ``indices`` and ``values``.

        Columns are sorted within each row and exact zeros are dropped.
        """
        order = np.argsort(indices, axis=1, kind="stable")
        indices = np.take_along_axis(indices, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        nonzero = values != 0
        first_row = self.n_filled_rows
        n_rows = indices.shape[0]
        start = self.indptr[first_row]
        row_ends = self.indptr[first_row + 1 : first_row + n_rows + 1]
        np.cumsum(np.count_nonzero(nonzero, axis=1), out=row_ends)
        row_ends += start
        stop = row_ends[-1] if n_rows else start
        self.data[start:stop] = values[nonzero]
        self.indices[start:stop] = indices[nonzero]
        self.n_filled_rows += n_rows

    def finish(self):
        """Return the CSR matrix; the builder must not be used afterwards."""
        if self.n_filled_rows != self.shape[0]:
            raise ValueError(
                f"CSRBuilder received {self.n_filled_rows} of the {self.shape[0]} "
                "rows it was sized for; append the missing rows before finish()."
            )
        nnz = int(self.indptr[-1])
        # Shrinking in place frees the unused tail without copying the filled part.
        self.data.resize(nnz, refcheck=False)
        self.indices.resize(nnz, refcheck=False)
        codes = sp.csr_matrix(
            (self.data, self.indices, self.indptr), shape=self.shape, copy=False
        )
        codes.has_sorted_indices = True
        self.data = self.indices = self.indptr = None
        return codes
