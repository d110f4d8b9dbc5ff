"""Tests of the training kernels: gradients, top-k selection, optimizers, CSR."""

import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import config_context
from threadpoolctl import threadpool_limits

from sklearn_ksparse import _kernels, _ksparse, _optimizers, _training
from sklearn_ksparse._kernels import (
    DenseCodes,
    SparseCodes,
    backpropagate,
    encode_pre_activations,
    encoding_pre_activations,
    select_codes,
    use_dense_layout,
)
from sklearn_ksparse._ksparse import _Encoder
from sklearn_ksparse._optimizers import AdamOptimizer, SGDOptimizer
from sklearn_ksparse._topk import CSRBuilder, codes_to_csr, select_topk
from sklearn_ksparse._training import TopKTrainer, initial_parameters

N_SAMPLES, N_FEATURES, N_COMPONENTS = 12, 7, 20
K, AUXK_K, AUXK_COEF = 3, 4, 0.5


def make_trainer(activation, tied, dense, dtype=np.float64, seed=0):
    """Return a trainer with random weights, half of its units dead, and data."""
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES)).astype(dtype)
    pre_bias = (0.1 * rng.standard_normal(N_FEATURES)).astype(dtype)
    params = initial_parameters(N_COMPONENTS, pre_bias, tied, rng)
    params["encoder_bias"] = (0.1 * rng.standard_normal(N_COMPONENTS)).astype(dtype)
    if not tied:
        noise = 0.3 * rng.standard_normal(params["encoder_weights"].shape)
        params["encoder_weights"] += noise.astype(dtype)
    names = [name for name in TopKTrainer.PARAM_ORDER if name in params]
    optimizer = AdamOptimizer([params[name] for name in names], 1e-3, 0.9, 0.999, 1e-8)
    trainer = TopKTrainer(
        params, optimizer, activation, normalize_components=True,
        auxk_coef=AUXK_COEF, auxk_k=AUXK_K, dead_after=100,
    )  # fmt: skip
    trainer.samples_since_fired[::2] = 1000
    trainer.dense = dense
    return trainer, X


def reference_loss(params, X, main_mask, aux_mask, error, activation):
    """Compute main plus AuxK loss densely, with the selections held fixed.

    ``error`` is the AuxK target ``x - x_hat`` of the unperturbed weights,
    which the AuxK loss treats as a constant.
    """
    encoder_weights = params.get("encoder_weights", params["components"])
    centered = X - params["pre_bias"]
    pre_activations = centered @ encoder_weights.T + params["encoder_bias"]
    if activation == "relu":
        activated = np.maximum(pre_activations, 0)
    else:
        activated = pre_activations
    reconstruction = (activated * main_mask) @ params["components"]
    reconstruction += params["pre_bias"]
    n_samples = X.shape[0]
    loss = 0.5 * np.sum((reconstruction - X) ** 2) / n_samples
    aux_reconstruction = (activated * aux_mask) @ params["components"]
    aux_loss = 0.5 * np.sum((aux_reconstruction - error) ** 2) / n_samples
    return loss + AUXK_COEF * aux_loss, reconstruction


def selection_masks(trainer, X):
    """Return the main and AuxK selections of the trainer as dense masks."""
    params = trainer.params
    _, pre_activations = encode_pre_activations(
        X, trainer.encoder_weights, params["encoder_bias"], params["pre_bias"]
    )
    main_mask = np.zeros_like(pre_activations)
    indices, _ = select_topk(pre_activations, K)
    np.put_along_axis(main_mask, indices, 1, axis=1)
    dead_units = np.flatnonzero(trainer.dead_mask())
    aux_indices, _ = select_topk(pre_activations[:, dead_units], AUXK_K)
    aux_mask = np.zeros_like(pre_activations)
    np.put_along_axis(aux_mask, dead_units[aux_indices], 1, axis=1)
    return main_mask, aux_mask


def finite_difference_gradients(trainer, X, step=1e-6):
    """Return central finite differences of the reference loss."""
    activation = trainer.activation
    main_mask, aux_mask = selection_masks(trainer, X)
    params = {name: value.copy() for name, value in trainer.params.items()}
    _, reconstruction = reference_loss(params, X, main_mask, aux_mask, 0, activation)
    error = X - reconstruction
    gradients = {}
    for name, value in params.items():
        gradient = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            original = value[index]
            value[index] = original + step
            upper, _ = reference_loss(params, X, main_mask, aux_mask, error, activation)
            value[index] = original - step
            lower, _ = reference_loss(params, X, main_mask, aux_mask, error, activation)
            value[index] = original
            gradient[index] = (upper - lower) / (2 * step)
        gradients[name] = gradient
    return gradients


@pytest.mark.parametrize("activation", ["relu", "identity"])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("dense", [False, True])
def test_gradients_match_finite_differences(activation, tied, dense):
    trainer, X = make_trainer(activation, tied, dense)
    assert trainer.dead_mask().sum() > AUXK_K
    _, gradients, _ = trainer.compute_gradients(X, K)
    expected = finite_difference_gradients(trainer, X)
    assert set(gradients) == set(expected)
    for name, gradient in gradients.items():
        scale = np.abs(expected[name]).max()
        assert scale > 0, name
        np.testing.assert_allclose(
            gradient, expected[name], rtol=0, atol=1e-7 * scale, err_msg=name
        )


@pytest.mark.parametrize("activation", ["relu", "identity"])
@pytest.mark.parametrize("tied", [False, True])
def test_sparse_and_dense_layouts_agree(activation, tied):
    sparse_trainer, X = make_trainer(activation, tied, dense=False)
    dense_trainer, _ = make_trainer(activation, tied, dense=True)
    sparse_loss, sparse_gradients, sparse_codes = sparse_trainer.compute_gradients(X, K)
    dense_loss, dense_gradients, dense_codes = dense_trainer.compute_gradients(X, K)
    assert isinstance(sparse_codes, SparseCodes)
    assert isinstance(dense_codes, DenseCodes)
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-12)
    for name, gradient in sparse_gradients.items():
        np.testing.assert_allclose(
            gradient, dense_gradients[name], rtol=1e-10, atol=1e-12, err_msg=name
        )


def test_layouts_train_identically():
    sparse_trainer, X = make_trainer("relu", False, dense=False)
    dense_trainer, _ = make_trainer("relu", False, dense=True)
    for _ in range(3):
        sparse_loss, sparse_fired = sparse_trainer.train_step(X, K)
        dense_loss, dense_fired = dense_trainer.train_step(X, K)
        assert sparse_loss == pytest.approx(dense_loss, rel=1e-10)
        np.testing.assert_array_equal(sparse_fired, dense_fired)
    for name, value in sparse_trainer.params.items():
        np.testing.assert_allclose(value, dense_trainer.params[name], rtol=1e-9)


def test_layout_choice_follows_density():
    assert not use_dense_layout(16, 2048)
    assert use_dense_layout(392, 400)
    assert not use_dense_layout(48, 512)
    assert use_dense_layout(64, 512)
    assert use_dense_layout(1, 2048, dense=True)
    assert not use_dense_layout(400, 400, dense=False)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_float32_training_stays_float32(dense, tied):
    trainer, X = make_trainer("relu", tied, dense, dtype=np.float32)
    loss, gradients, codes = trainer.compute_gradients(X, K)
    assert np.isfinite(loss)
    for name, gradient in gradients.items():
        assert gradient.dtype == np.float32, name
    reconstruction = codes.decode(trainer.params["components"])
    assert reconstruction.dtype == np.float32
    trainer.train_step(X, K)
    for name, value in trainer.params.items():
        assert value.dtype == np.float32, name
    for moment in trainer.optimizer.first_moments + trainer.optimizer.second_moments:
        assert moment.dtype == np.float32


@pytest.mark.parametrize("dense", [False, True])
def test_unit_gradients_keep_dtype(dense):
    rng = np.random.RandomState(0)
    pre_activations = rng.standard_normal((9, 30)).astype(np.float32)
    components = rng.standard_normal((30, 5)).astype(np.float32)
    residual = rng.standard_normal((9, 5)).astype(np.float32)
    codes = select_codes(pre_activations, 4, "relu", 30, dense=dense)
    gradients = codes.unit_gradients(components, residual, "relu")
    assert gradients.dtype == np.float32
    bias_gradient = np.zeros(30, dtype=np.float32)
    codes.add_column_sums(gradients, bias_gradient)
    assert bias_gradient.dtype == np.float32


def check_topk(pre_activations, k):
    indices, values = select_topk(pre_activations, k)
    n_samples, n_components = pre_activations.shape
    assert indices.shape == (n_samples, k)
    np.testing.assert_array_equal(
        values, np.take_along_axis(pre_activations, indices, axis=1)
    )
    for row in range(n_samples):
        assert np.unique(indices[row]).size == k
    expected = np.sort(pre_activations, axis=1)[:, n_components - k :]
    np.testing.assert_array_equal(np.sort(values, axis=1), expected)
    return indices


@pytest.mark.parametrize("gather_rows", [0, 64, 10**9])
@pytest.mark.parametrize("n_rows", [1, 3, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoding_skips_zero_columns_exactly(monkeypatch, gather_rows, n_rows, dtype):
    # gather_rows=0 always skips the zero columns, 10**9 never does.
    monkeypatch.setattr(_kernels, "_ZERO_COLUMN_GATHER_ROWS", gather_rows)
    rng = np.random.RandomState(n_rows)
    X = rng.standard_normal((n_rows, 30)).astype(dtype)
    X[:, ::3] = 0.0
    X[:, 1] = -0.0
    weights = rng.standard_normal((12, 30)).astype(dtype)
    bias = rng.standard_normal(12).astype(dtype)
    # A nonzero pre-bias on the zero columns must still reach the result.
    pre_bias = rng.standard_normal(30).astype(dtype)
    result = encoding_pre_activations(X, weights, bias, pre_bias)
    expected = (X.astype(np.float64) - pre_bias) @ weights.T.astype(np.float64)
    expected += bias
    assert result.dtype == dtype
    assert result.shape == (n_rows, 12)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(result, expected, rtol=tolerance, atol=tolerance)
    # The input is left as it was.
    assert not X[:, ::3].any()


def test_encoding_without_zero_columns():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((50, 20))
    weights = rng.standard_normal((8, 20))
    bias, pre_bias = rng.standard_normal(8), rng.standard_normal(20)
    _, expected = encode_pre_activations(X, weights, bias, pre_bias)
    result = encoding_pre_activations(X, weights, bias, pre_bias)
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize(
    "n_components, k",
    [(5, 1), (5, 5), (64, 7), (511, 16), (512, 16), (2048, 16), (2048, 64),
     (3000, 1), (3000, 500), (2048, 2047)],
)  # fmt: skip
def test_select_topk_matches_argpartition(n_components, k):
    rng = np.random.RandomState(n_components + k)
    pre_activations = rng.standard_normal((40, n_components))
    indices = check_topk(pre_activations, k)
    expected = np.argpartition(pre_activations, n_components - k, axis=1)
    expected = expected[:, n_components - k :]
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.sort(expected, axis=1))


@pytest.mark.parametrize("n_components, k", [(8, 3), (600, 16), (2048, 64)])
def test_select_topk_with_ties(n_components, k):
    rng = np.random.RandomState(k)
    # Few distinct values, so that the k-th largest value is tied in most rows.
    pre_activations = rng.randint(0, 4, size=(50, n_components)).astype(np.float32)
    pre_activations[0] = 1.0
    check_topk(pre_activations, k)


@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_dense_codes_keep_k_with_ties(activation):
    rng = np.random.RandomState(1)
    # Few distinct values, so that the k-th largest value is tied in most rows.
    pre_activations = rng.randint(-2, 3, size=(40, 30)).astype(np.float32)
    pre_activations[0] = 1.0
    codes = select_codes(pre_activations, 7, activation, 30, dense=True)
    reference = select_codes(pre_activations, 7, activation, 30, dense=False)

    assert (codes.kept_mask.sum(axis=1) == 7).all()
    kept_values = np.sort(pre_activations[codes.kept_mask].reshape(40, 7), axis=1)
    np.testing.assert_array_equal(kept_values, np.sort(pre_activations, axis=1)[:, 23:])
    assert codes.codes.dtype == np.float32
    np.testing.assert_array_equal(
        np.sort(codes.codes, axis=1)[:, 23:], np.sort(reference.values, axis=1)
    )
    assert (codes.codes[~codes.kept_mask] == 0).all()


def textbook_adam(params, grads_per_step, learning_rate, beta_1, beta_2, epsilon):
    """Run Adam as in Kingma and Ba (2015), Algorithm 1 with the efficient step.

    The step size is ``learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)``
    applied to ``m / (sqrt(v) + epsilon)``, the form the paper gives at the end
    of its Section 2 and that scikit-learn's MLP uses.
    """
    params = [param.astype(np.float64) for param in params]
    first = [np.zeros_like(param) for param in params]
    second = [np.zeros_like(param) for param in params]
    history = []
    for t, grads in enumerate(grads_per_step, start=1):
        step = learning_rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        for index, grad in enumerate(grads):
            first[index] = beta_1 * first[index] + (1 - beta_1) * grad
            second[index] = beta_2 * second[index] + (1 - beta_2) * grad**2
            update = step * first[index] / (np.sqrt(second[index]) + epsilon)
            params[index] = params[index] - update
        history.append([param.copy() for param in params])
    return history


def textbook_sgd(params, grads_per_step, learning_rate, momentum, nesterov):
    """Run SGD with classical or Nesterov momentum, velocity form."""
    params = [param.astype(np.float64) for param in params]
    velocities = [np.zeros_like(param) for param in params]
    history = []
    for grads in grads_per_step:
        for index, grad in enumerate(grads):
            velocities[index] = momentum * velocities[index] - learning_rate * grad
            if nesterov:
                step = momentum * velocities[index] - learning_rate * grad
            else:
                step = velocities[index]
            params[index] = params[index] + step
        history.append([param.copy() for param in params])
    return history


def random_problem(n_steps=4):
    rng = np.random.RandomState(3)
    shapes = [(13, 11), (13,), (300,)]
    params = [rng.standard_normal(shape) for shape in shapes]
    grads_per_step = [
        [rng.standard_normal(shape) for shape in shapes] for _ in range(n_steps)
    ]
    return params, grads_per_step


@pytest.fixture
def small_blocks(monkeypatch):
    """Split the arrays into several blocks, so the threads share the work."""
    monkeypatch.setattr(_optimizers, "_BLOCK_SIZE", 16)


@pytest.mark.parametrize("n_threads", [1, 3])
def test_adam_matches_textbook(small_blocks, n_threads):
    params, grads_per_step = random_problem()
    expected = textbook_adam(params, grads_per_step, 0.01, 0.9, 0.99, 1e-3)
    optimizer = AdamOptimizer(params, 0.01, 0.9, 0.99, 1e-3, n_threads=n_threads)
    for grads, expected_params in zip(grads_per_step, expected, strict=True):
        optimizer.update_params(params, [grad.copy() for grad in grads])
        for param, expected_param in zip(params, expected_params, strict=True):
            np.testing.assert_allclose(param, expected_param, rtol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_sgd_matches_textbook(small_blocks, nesterov, n_threads):
    params, grads_per_step = random_problem()
    expected = textbook_sgd(params, grads_per_step, 0.05, 0.9, nesterov)
    optimizer = SGDOptimizer(params, 0.05, 0.9, nesterov, n_threads=n_threads)
    for grads, expected_params in zip(grads_per_step, expected, strict=True):
        optimizer.update_params(params, [grad.copy() for grad in grads])
        for param, expected_param in zip(params, expected_params, strict=True):
            np.testing.assert_allclose(param, expected_param, rtol=1e-12)


def test_csr_builder_matches_codes_to_csr():
    rng = np.random.RandomState(0)
    n_components = 50
    pieces = []
    builder = CSRBuilder(23, n_components, 6, np.float32)
    for n_rows in (10, 0, 13):
        indices = np.argsort(rng.rand(n_rows, n_components), axis=1)[:, :6]
        values = rng.standard_normal((n_rows, 6)).astype(np.float32)
        values[values < -0.5] = 0
        builder.append(indices, values)
        pieces.append(codes_to_csr(indices, values, n_components))
    codes = builder.finish()
    expected = sp.vstack(pieces, format="csr")
    assert codes.dtype == np.float32
    assert codes.has_canonical_format
    assert codes.nnz == expected.nnz
    np.testing.assert_array_equal(codes.indptr, expected.indptr)
    np.testing.assert_array_equal(codes.indices, expected.indices)
    np.testing.assert_array_equal(codes.data, expected.data)


def test_csr_builder_rejects_missing_rows():
    builder = CSRBuilder(3, 4, 2, np.float64)
    builder.append(np.array([[0, 1]]), np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="received 1 of the 3 rows"):
        builder.finish()


def test_encode_memory_is_output_plus_one_chunk():
    rng = np.random.RandomState(0)
    n_samples, n_features, n_components, k = 60000, 8, 40, 8
    X = rng.standard_normal((n_samples, n_features)).astype(np.float32)
    weights = rng.standard_normal((n_components, n_features)).astype(np.float32)
    encoder = _Encoder(
        weights, np.zeros(n_components, np.float32),
        np.zeros(n_features, np.float32), weights, "identity",
    )  # fmt: skip
    with config_context(working_memory=1):
        tracemalloc.start()
        codes = encoder.encode(X, k)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    output_bytes = codes.data.nbytes + codes.indices.nbytes + codes.indptr.nbytes
    assert codes.nnz == n_samples * k
    # One chunk of scikit-learn's working memory (1 MiB) on top of the output,
    # with 1 MiB of slack for the per-chunk sorting temporaries.
    assert peak <= output_bytes + 2 * 2**20


def test_unit_norm_steps_thread_independent(monkeypatch):
    monkeypatch.setattr(_optimizers, "_BLOCK_SIZE", 2 * N_FEATURES)
    results = []
    for n_threads in (1, 3):
        trainer, X = make_trainer("relu", False, dense=False)
        trainer.optimizer.n_threads = n_threads
        trainer.train_step(X, K)
        results.append(trainer.params["components"])
    for components in results:
        norms = np.linalg.norm(components, axis=1)
        np.testing.assert_allclose(norms, 1.0, rtol=1e-12)
    np.testing.assert_array_equal(results[0], results[1])


def test_projection_removes_parallel_part():
    rng = np.random.RandomState(0)
    atoms = rng.standard_normal((N_COMPONENTS, N_FEATURES))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    gradient = rng.standard_normal((N_COMPONENTS, N_FEATURES))
    expected = gradient - np.sum(gradient * atoms, axis=1, keepdims=True) * atoms
    _training._project_rows(gradient, atoms)
    np.testing.assert_allclose(gradient, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.sum(gradient * atoms, axis=1), 0, atol=1e-12)


def make_encoder(rng, n_features, n_components):
    weights = rng.standard_normal((n_components, n_features))
    components = weights / np.linalg.norm(weights, axis=1, keepdims=True)
    bias = rng.standard_normal(n_components)
    pre_bias = rng.standard_normal(n_features)
    return _Encoder(weights, bias, pre_bias, components, "relu")


@pytest.mark.parametrize("least_squares", [False, True])
@pytest.mark.parametrize("sparse_input", [False, True])
def test_parallel_encode_matches_sequential(monkeypatch, least_squares, sparse_input):
    rng = np.random.RandomState(0)
    encoder = make_encoder(rng, 9, 30)
    X = rng.standard_normal((101, 9))
    if sparse_input:
        X[X < 0.5] = 0
        X = sp.csr_matrix(X)
    monkeypatch.setattr(_ksparse, "default_n_threads", lambda: 1)
    expected = encoder.encode(X, 5, least_squares)
    monkeypatch.setattr(_ksparse, "default_n_threads", lambda: 3)
    monkeypatch.setattr(_ksparse, "_MIN_PARALLEL_CHUNK_ROWS", 4)
    chunks = list(encoder.chunks(X.shape[0], n_workers=3))
    assert len(chunks) == 6
    codes = encoder.encode(X, 5, least_squares)
    np.testing.assert_array_equal(codes.indptr, expected.indptr)
    np.testing.assert_array_equal(codes.indices, expected.indices)
    np.testing.assert_allclose(codes.data, expected.data, rtol=1e-12)


def test_parallel_encode_keeps_error_state(monkeypatch):
    rng = np.random.RandomState(0)
    encoder = make_encoder(rng, 4, 10)
    X = np.full((40, 4), 1e308)
    monkeypatch.setattr(_ksparse, "default_n_threads", lambda: 2)
    monkeypatch.setattr(_ksparse, "_MIN_PARALLEL_CHUNK_ROWS", 4)
    with np.errstate(over="raise", invalid="ignore"):
        with pytest.raises(FloatingPointError, match="overflow"):
            encoder.encode(X, 3)
    with np.errstate(over="ignore", invalid="ignore"):
        codes = encoder.encode(X, 3)
    assert not np.isfinite(codes.data).all()


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_row_split_gradients_match(dense, tied):
    trainer, X = make_trainer("relu", tied, dense)
    loss, gradients, codes = trainer.compute_gradients(X, K)
    trainer.n_workers = 3
    split_loss, split_gradients, split_codes = trainer.compute_gradients(X, K)

    assert split_loss == pytest.approx(loss, rel=1e-12)
    assert split_gradients.keys() == gradients.keys()
    for name, gradient in gradients.items():
        np.testing.assert_allclose(split_gradients[name], gradient, rtol=1e-10)
    np.testing.assert_array_equal(
        trainer._count_fired(split_codes, N_COMPONENTS),
        trainer._count_fired(codes, N_COMPONENTS),
    )


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_weight_gradients_independent_of_workers(dense, tied):
    trainer, X = make_trainer("relu", tied, dense, dtype=np.float32)
    dead_units = trainer._aux_units()
    centered, terms, code_gradients, _ = trainer._forward_rows(
        X, K, X.shape[0], dead_units
    )
    results = [
        backpropagate(
            terms,
            centered,
            trainer.params,
            "relu",
            code_gradients,
            n_workers=n_workers,
        )
        for n_workers in (1, 2)
    ]
    assert results[0].keys() == results[1].keys()
    for name, gradient in results[0].items():
        assert gradient.dtype == np.float32, name
        np.testing.assert_array_equal(results[1][name], gradient, err_msg=name)


def recorded_encode_threads(monkeypatch, call):
    """Return the ids of the threads that encoded chunks during ``call()``."""
    threads = []
    encode_chunk = _Encoder.encode_chunk

    def recording_encode_chunk(self, *args):
        threads.append(threading.get_ident())
        return encode_chunk(self, *args)

    monkeypatch.setattr(_Encoder, "encode_chunk", recording_encode_chunk)
    call()
    return set(threads)


def test_transform_threads_follow_blas_control(monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((600, 6))
    model = _ksparse.KSparseAutoencoder(8, k=2, max_iter=1, random_state=0)
    model.fit(X[:50])
    expected = model.transform(X)
    with threadpool_limits(2, user_api="blas"):
        if _optimizers.default_n_threads() < 2:
            pytest.skip("BLAS cannot use two threads on this machine")
        # The main thread controls the BLAS limit, so workers encode the chunks.
        main_threads = recorded_encode_threads(monkeypatch, lambda: model.transform(X))
        # A thread that cannot set the limit encodes every chunk itself, so
        # that the chunks do not each start a full BLAS thread pool.
        with ThreadPoolExecutor(1) as pool:
            caller = pool.submit(threading.get_ident).result()
            other_threads = recorded_encode_threads(
                monkeypatch, lambda: pool.submit(model.transform, X).result()
            )
            codes = pool.submit(model.transform, X).result()

    assert threading.get_ident() not in main_threads
    assert other_threads == {caller}
    assert (codes != expected).nnz == 0


def test_blas_limit_only_from_main_thread():
    n_threads = _optimizers.default_n_threads()
    if n_threads < 2:
        pytest.skip("BLAS runs one thread on this machine")

    def limited_count():
        with _optimizers.single_blas_thread():
            return _optimizers.default_n_threads()

    with ThreadPoolExecutor(1) as pool:
        in_worker = pool.submit(limited_count).result()
    in_main = limited_count()

    assert in_worker == n_threads
    assert in_main == 1
    assert _optimizers.default_n_threads() == n_threads


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_concurrent_fits_keep_blas_threads():
    rng = np.random.RandomState(0)
    # Each encoder product takes 2 * 256 * 512 * 256 flops, enough to split rows.
    X = rng.standard_normal((512, 256))
    before = _optimizers.default_n_threads()

    def fit(max_iter):
        model = _ksparse.KSparseAutoencoder(
            512, k=4, batch_size=256, max_iter=max_iter, random_state=0
        )
        return model.fit(X)

    with ThreadPoolExecutor(2) as pool:
        models = list(pool.map(fit, [2, 3]))

    assert _optimizers.default_n_threads() == before
    assert [model.n_iter_ for model in models] == [2, 3]
