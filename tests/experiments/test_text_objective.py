"""diffjax.training.objectives.discrete and the pure helpers of the text task
(experiments.tasks.text, experiments.text_metrics): the loss is exactly the process's bound
(per token), pure and jittable; bf16 stays finite; an untrained (uniform-output) masked model
scores log2(27) bits/char; prompts and word counts."""
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from diffjax import discrete, models  # noqa: E402
from diffjax.training.objectives import make_discrete_objective  # noqa: E402
from experiments import text_metrics  # noqa: E402
from experiments.tasks import text as text_task  # noqa: E402

V, L, B = 27, 16, 8


def _model(process, dtype=jnp.float32, seed=0):
    extra = 1 if isinstance(process, discrete.MaskedProcess) else 0
    model = models.TokenTransformer(V, num_extra_tokens=extra, seq_len=L, dim=32, depth=1,
                                    heads=2, cond_dim=16, dtype=dtype, rngs=nnx.Rngs(seed))
    # The output layer is zero at init (uniform predictions); give it weights so that the
    # comparisons below involve a non-trivial model.
    _, params = make_discrete_objective(model, process=process)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [p + 0.3 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(tree, leaves))
    return model


def _tokens(seed=0):
    return np.random.default_rng(seed).integers(0, V, (B, L)).astype(np.int32)


@pytest.mark.parametrize("kind,num_steps", [("masked", None), ("uniform", 10)])
def test_loss_is_the_process_nelbo_per_token(kind, num_steps):
    process = discrete.masked(V) if kind == "masked" else discrete.uniform(V, "cosine")
    objective, params = make_discrete_objective(_model(process), process=process,
                                                num_steps=num_steps)
    x0, key = _tokens(), jax.random.key(3)
    loss_fn = jax.jit(objective.loss_fn)
    loss, metrics = loss_fn(params, {"x": x0}, key)
    k_loss, _ = jax.random.split(key)
    reference = jax.jit(lambda p, x, k: process.nelbo(objective.model_fn(p), x, k,
                                                      num_steps=num_steps))
    expected = reference(params, jnp.asarray(x0), k_loss).mean() / L
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["bits_per_token"]), float(expected) / math.log(2),
                               rtol=1e-5)
    assert float(loss) > 0.5  # a real bound of random text, not a degenerate zero
    # Pure: the same inputs give the same loss; the key drives the draws.
    again, _ = loss_fn(params, {"x": x0}, key)
    assert float(again) == float(loss)
    other, _ = loss_fn(params, {"x": x0}, jax.random.key(4))
    assert float(other) != float(loss)


def test_hybrid_loss_and_padding_mask():
    process = discrete.masked(V)
    model = _model(process)
    objective, params = make_discrete_objective(model, process=process, loss="hybrid",
                                                ce_weight=0.5)
    x0, key = _tokens(1), jax.random.key(5)
    k_loss, _ = jax.random.split(key)

    @jax.jit
    def reference(params, x0, k):
        fn = objective.model_fn(params)
        return process.hybrid_loss(fn, x0, k, ce_weight=0.5), process.nelbo(fn, x0, k)

    per_seq, nelbo = reference(params, jnp.asarray(x0), k_loss)
    mask = np.array([True] * 5 + [False] * 3)
    loss, metrics = jax.jit(objective.loss_fn)(params, {"x": x0, "mask": mask}, key)
    np.testing.assert_allclose(float(loss), float(per_seq[:5].mean()) / L, rtol=1e-5)
    assert metrics == {}  # the hybrid loss is not a bound: no bits reported
    # The hybrid loss exceeds the bound at the same draws by ce_weight * cross-entropy >= 0.
    assert np.all(np.asarray(per_seq) >= np.asarray(nelbo) - 1e-4)


def test_gradients_finite_in_bfloat16_and_close_to_float32():
    process = discrete.masked(V)
    obj32, p32 = make_discrete_objective(_model(process), process=process)
    obj16, p16 = make_discrete_objective(_model(process, jnp.bfloat16), process=process)
    x0, key = _tokens(2), jax.random.key(7)
    (l16, _), g16 = jax.jit(jax.value_and_grad(obj16.loss_fn, has_aux=True))(p16, {"x": x0}, key)
    l32, _ = jax.jit(obj32.loss_fn)(p32, {"x": x0}, key)
    assert l16.dtype == jnp.float32
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(g16))
    np.testing.assert_allclose(float(l16), float(l32), rtol=0.05)


def test_model_fn_gives_logits_and_validation():
    process = discrete.masked(V)
    model = _model(process)
    objective, params = make_discrete_objective(model, process=process)
    x = jnp.full((2, L), V, jnp.int32)  # all masked
    logits = jax.jit(lambda p, x, t: objective.model_fn(p)(x, t))(params, x, jnp.array([0.5, 1.0]))
    assert logits.shape == (2, L, V) and logits.dtype == jnp.float32
    with pytest.raises(ValueError, match="loss must be one of"):
        make_discrete_objective(model, process=process, loss="mse")
    with pytest.raises(ValueError, match="vocab_size"):
        make_discrete_objective(model, process=discrete.masked(V + 1))
    with pytest.raises(ValueError, match="num_extra_tokens"):
        make_discrete_objective(_model(discrete.uniform(V)), process=process)
    with pytest.raises(ValueError, match="num_steps"):
        make_discrete_objective(model, process=process, num_steps=0)
    with pytest.raises(ValueError, match="integer tokens"):
        objective.loss_fn(params, {"x": np.zeros((2, L), np.float32)}, jax.random.key(0))


def test_untrained_masked_model_scores_log2_vocab_bits_per_char():
    # A zero-initialised output layer predicts uniformly: under the linear schedule the masked
    # bound is sum_i int (1/t) P(masked) log V dt = log V per token, exactly in expectation.
    process = discrete.masked(V)
    model = models.TokenTransformer(V, seq_len=L, dim=32, depth=1, heads=2, rngs=nnx.Rngs(0))
    objective, params = make_discrete_objective(model, process=process)
    tokens = np.random.default_rng(0).integers(0, V, (96, L)).astype(np.int32)
    out = text_metrics.bits_per_char(objective, params, tokens, jax.random.key(0), elbo_samples=4,
                                  batch_size=32)
    assert out["num_tokens"] == 96 * L and out["elbo_samples"] == 4
    assert "continuous-time ELBO" in out["estimator"] and "antithetic" in out["estimator"]
    assert abs(out["bits_per_char"] - math.log2(V)) < 4 * out["stderr_bits_per_char"] + 1e-3
    assert 0 < out["stderr_bits_per_char"] < 0.3


def test_prompt_encoding_and_word_fraction():
    x = text_task.encode_prompt("The __ is", 12, V)
    assert x.shape == (12,)
    assert list(x[:9]) == [20, 8, 5, 0, V, V, 0, 9, 19] and np.all(x[9:] == V)
    with pytest.raises(ValueError, match="seq_len"):
        text_task.encode_prompt("x" * 13, 12, V)
    with pytest.raises(ValueError, match="prompt may only hold"):
        text_task.encode_prompt("a1", 12, V)
    words = frozenset({"the", "file", "is"})
    out = text_metrics.word_fraction(["xx the file qq is zz", "ab the cd"], words)
    assert out == {"word_fraction": 4 / 5, "num_words": 5}  # first/last words are dropped
