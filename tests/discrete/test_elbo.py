"""ELBOs against exact truth on an enumerable joint (a 3-token, length-4 Markov chain)."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax.discrete as dd
from discrete_oracle import markov

J = markov(vocab_size=3, length=4, seed=0)
N = 3 * 8192


def exact_model(proc):
    return J.masked_model(proc.mask_id) if isinstance(proc, dd.MaskedProcess) else J.uniform_model(proc.alpha)


@functools.lru_cache(maxsize=None)
def nelbo_fn(kind, schedule, model, num_steps, antithetic=True):
    proc = getattr(dd, kind)(3, schedule)
    product = J.product_model(None if kind == "masked" else proc.alpha)
    fn = {"exact": exact_model(proc), "product": product}[model]
    return jax.jit(lambda x0, key: proc.nelbo(fn, x0, key, num_steps, antithetic=antithetic))


def mean_se(v):
    v = np.asarray(v, np.float64)
    return v.mean(), v.std() / np.sqrt(v.size)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_continuous_integrand_is_the_limit_of_the_step_kl(kind):
    # Pointwise in (x0, x_t, model probabilities, t): KL(q(x_{t-h} | x_t, x0) || p(x_{t-h} | x_t)) / h
    # -> the continuous-time integrand, for any model (here random logits). float64.
    with jax.enable_x64(True):
        K = 4
        for schedule in ("linear", "cosine"):
            proc = getattr(dd, kind)(K, schedule)
            pairs = np.array(list(itertools.product(range(K), range(proc.num_states))))
            x0, xt = jnp.asarray(pairs[:, :1]), jnp.asarray(pairs[:, 1:])
            logits = jax.random.normal(jax.random.PRNGKey(0), (len(pairs), 1, K), jnp.float64) * 2
            logp = proc.x0_log_probs(logits, xt)
            h = 1e-6

            @jax.jit
            def rate_and_kl(tt, proc=proc, x0=x0, xt=xt, logp=logp):
                return proc.continuous_integrand(x0, xt, logp, tt), proc.step_kl(x0, xt, logp, tt - h, tt) / h

            for t in (0.05, 0.4, 0.9):
                rate, kl = map(np.asarray, rate_and_kl(jnp.full((len(pairs),), t)))
                assert rate.dtype == np.float64 and np.all(rate >= 0)
                np.testing.assert_allclose(rate, kl, rtol=2e-4, atol=1e-9)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_continuous_bound_is_tight_per_sequence_for_the_exact_denoiser(kind):
    # With the exact p(x0_i | x_t) both continuous-time bounds equal -log p(x0) in expectation,
    # for every x0 (any-order autoregression for masking; exact reverse rates for uniform noise).
    order = np.argsort(-J.probs)
    cum = np.cumsum(J.probs[order])
    seqs = J.states[order[[0, np.searchsorted(cum, 0.9), np.searchsorted(cum, 0.99)]]]  # -log p: 0.4, 2.6, 5.5
    x0 = jnp.asarray(np.repeat(seqs, N // 3, axis=0))
    v = np.asarray(nelbo_fn(kind, "cosine", "exact", None)(x0, jax.random.PRNGKey(1))).reshape(3, -1)
    for row, seq in zip(v, seqs):
        m, se = mean_se(row)
        nll = J.nll(seq[None])[0]
        assert abs(m - nll) < 4 * se + 0.01, (seq, m, nll, se)


@pytest.mark.parametrize("kind", ["masked", "uniform"])
def test_elbos_upper_bound_the_exact_nll(kind):
    x0 = jnp.asarray(J.sample(2, N))
    key = jax.random.PRNGKey(3)
    H = J.entropy
    cont, cont_se = mean_se(nelbo_fn(kind, "cosine", "exact", None)(x0, key))
    d4, d4_se = mean_se(nelbo_fn(kind, "cosine", "exact", 4)(x0, key))
    d32, d32_se = mean_se(nelbo_fn(kind, "cosine", "exact", 32)(x0, key))
    assert abs(cont - H) < 4 * cont_se  # tight (and so >= the NLL)
    assert d32 > H - 3 * d32_se and d4 > H + 0.2  # discrete-time bounds are looser...
    assert d4 > d32 + 0.1  # ... the more so with fewer steps
    # a wrong model (positions treated as independent) pays: its bounds are well above the NLL
    wrong, wrong_se = mean_se(nelbo_fn(kind, "cosine", "product", None)(x0, key))
    assert wrong > H + 0.1 + 3 * wrong_se


P_IID = np.array([0.5, 0.2, 0.15, 0.1, 0.05])


def iid_exact_model(proc):
    """Exact p(x0_i | x_t) for i.i.d. tokens with marginal P_IID (per-token Bayes rule)."""
    logp = jnp.log(jnp.asarray(P_IID, jnp.float32))
    V = len(P_IID)

    def fn(x_t, t):
        if isinstance(proc, dd.MaskedProcess):
            return jnp.broadcast_to(logp, x_t.shape + (V,))
        a = proc.alpha(t)[:, None, None]
        return logp + jnp.log(a * (x_t[..., None] == jnp.arange(V)) + (1 - a) / V)

    return fn


@pytest.mark.parametrize("kind,num_steps", [("masked", None), ("uniform", 16)])
def test_antithetic_time_sampling_lowers_the_variance(kind, num_steps):
    # The spread over keys of the batch-mean NELBO, stratified vs i.i.d. times. Cosine schedule:
    # there E[loss | t] varies with t (with the linear masked schedule and independent tokens it
    # is constant, leaving nothing for stratification to remove). The continuous bounds have a
    # heavy tail at t -> 0, hence the interquartile range next to the variance.
    proc = getattr(dd, kind)(len(P_IID), "cosine")
    model = iid_exact_model(proc)
    x0 = jnp.asarray(np.random.default_rng(0).choice(len(P_IID), size=(64, 32), p=P_IID))
    keys = jax.random.split(jax.random.PRNGKey(5), 200)
    spread = {}
    for anti in (True, False):
        batch_mean = jax.vmap(lambda k: proc.nelbo(model, x0, k, num_steps, antithetic=anti).mean())
        means = np.asarray(jax.jit(batch_mean)(keys))
        q25, q75 = np.percentile(means, [25, 75])
        spread[anti] = (np.var(means), q75 - q25)
        # both are unbiased for the same bound: 32 tokens of entropy H(P_IID) plus the discretisation gap
        assert means.mean() > 32 * float(-(P_IID * np.log(P_IID)).sum()) - 1.0
    assert spread[True][0] < 0.8 * spread[False][0], spread
    assert spread[True][1] < 0.85 * spread[False][1], spread


def test_hybrid_loss_adds_the_cross_entropy_at_the_same_x_t():
    proc = dd.uniform(3)
    model = J.product_model()  # ignores x_t, so the cross-entropy term is known exactly
    x0 = jnp.asarray(J.sample(6, 64))
    key = jax.random.PRNGKey(7)
    f = jax.jit(lambda w: proc.hybrid_loss(model, x0, key, num_steps=10, ce_weight=w))
    base = np.asarray(f(0.0))
    np.testing.assert_allclose(base, jax.jit(lambda: proc.nelbo(model, x0, key, 10))(), rtol=1e-6)
    ce = -np.log(J.marginals()[np.arange(4), np.asarray(x0)]).sum(-1)
    np.testing.assert_allclose(np.asarray(f(0.5)) - base, 0.5 * ce, rtol=1e-4)


@pytest.mark.parametrize("dtype,kind,num_steps", [(jnp.bfloat16, "masked", None), (jnp.float16, "uniform", 20)])
def test_nelbo_and_gradients_stay_finite_in_half_precision(dtype, kind, num_steps):
    V, L = 8, 16
    proc = getattr(dd, kind)(V, "cosine")
    n_out = V + 1 if kind == "masked" else V
    x0 = jax.random.randint(jax.random.PRNGKey(0), (32, L), 0, V)

    def model(params, x_t, t):  # half-precision logits, large, and a masked-out mask column
        h = params["emb"][x_t] * (1.0 + t[:, None, None].astype(params["emb"].dtype))
        logits = (h @ params["out"]) * jnp.asarray(300.0, h.dtype)
        if kind == "masked":
            logits = logits.at[..., V].set(dd.mask_value(logits.dtype))
        return logits

    params = {"emb": jax.random.normal(jax.random.PRNGKey(1), (V + 1, 16)),
              "out": jax.random.normal(jax.random.PRNGKey(2), (16, n_out)) * 0.01}
    loss = jax.jit(lambda p: proc.nelbo(functools.partial(model, p), x0, jax.random.PRNGKey(3), num_steps).mean())
    half = jax.tree.map(lambda a: a.astype(dtype), params)
    val, grads = jax.value_and_grad(loss)(half)
    assert val.dtype == jnp.float32 and np.isfinite(float(val))
    assert all(bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in jax.tree.leaves(grads))
    ref = float(loss(params))  # the same weights in float32
    assert abs(float(val) - ref) < 0.05 * abs(ref) + 0.5, (float(val), ref)


def test_bad_num_steps_and_x0_raise():
    proc = dd.masked(3)
    x0 = jnp.zeros((2, 4), jnp.int32)
    with pytest.raises(ValueError, match="num_steps"):
        proc.nelbo(J.product_model(), x0, jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="x0"):
        proc.nelbo(J.product_model(), x0.astype(jnp.float32), jax.random.PRNGKey(0))
