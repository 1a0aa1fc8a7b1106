"""diffjax.joint: the product process against its parts and closed forms, and the joint sampler
against an exact joint distribution, diffjax.sample, and its clamping contract."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import diffjax
from diffjax import discrete, joint, schedules

K = 10


def _proc(prediction="v"):
    return joint.product(diffjax.gaussian(schedules.cosine(), prediction), discrete.masked(K))


def _data(B, seed=0):
    rng = np.random.default_rng(seed)
    x0 = jnp.asarray(rng.uniform(-1, 1, (B, 4, 4, 1)), jnp.float32)
    y0 = jnp.asarray(rng.integers(0, K, B), jnp.int32)
    return x0, y0


# ---------------------------------------------------------------------------- the process
def test_marginals_are_the_parts_drawn_with_split_keys_and_their_own_times():
    proc = _proc()
    gauss, lab = proc.parts
    x0, y0 = _data(4000)
    t_img, t_lab = jnp.full((4000,), 0.3), jnp.full((4000,), 0.7)
    key = jax.random.key(3)
    xt, yt = proc.sample_marginal(key, (x0, y0), (t_img, t_lab))
    k0, k1 = jax.random.split(key)
    np.testing.assert_array_equal(xt, gauss.sample_marginal(k0, x0, t_img))
    np.testing.assert_array_equal(yt, lab.sample_marginal(k1, y0, t_lab))
    # and they have the marginals of their own times
    a, s = float(gauss.alpha(0.3)), float(gauss.sigma(0.3))
    z = (np.asarray(xt) - a * np.asarray(x0)) / s
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
    masked = np.asarray(yt) == K
    assert abs(masked.mean() - 0.7) < 0.03  # linear schedule: 1 - alpha(0.7) = 0.7
    np.testing.assert_array_equal(np.asarray(yt)[~masked], np.asarray(y0)[~masked])
    assert proc.alpha((0.3, 0.7))[1] == pytest.approx(0.3)


def test_log_marginal_is_the_sum_of_the_parts_closed_forms():
    proc = _proc()
    x0, y0 = _data(6)
    t = (jnp.asarray([0.1, 0.2, 0.5, 0.6, 0.8, 0.9]), jnp.asarray([0.9, 0.5, 0.5, 0.1, 0.3, 0.99]))
    xt, yt = proc.sample_marginal(jax.random.key(1), (x0, y0), t)
    got = np.asarray(proc.log_marginal((xt, yt), (x0, y0), t))
    sch = schedules.cosine()
    for i in range(6):
        a, s = float(sch.alpha(t[0][i])), float(sch.sigma(t[0][i]))
        gauss = stats.norm.logpdf(np.asarray(xt[i], np.float64), a * np.asarray(x0[i], np.float64), s).sum()
        alpha_l = 1.0 - float(t[1][i])
        label = math.log(1 - alpha_l) if int(yt[i]) == K else math.log(alpha_l)
        assert got[i] == pytest.approx(gauss + label, rel=1e-4, abs=1e-3)


def test_posterior_is_the_parts_posteriors():
    proc = _proc()
    gauss, lab = proc.parts
    x0, y0 = _data(5)
    xt, yt = proc.sample_marginal(jax.random.key(2), (x0, y0), 0.6)
    (mean, std), logq = proc.posterior((xt, yt), (x0, y0), 0.4, 0.6)
    m2, s2 = gauss.posterior(xt, x0, 0.4, 0.6)
    np.testing.assert_array_equal(mean, m2)
    np.testing.assert_array_equal(std, s2)
    np.testing.assert_array_equal(logq, lab.posterior(yt, y0, 0.4, 0.6))


def test_nelbo_is_the_sum_of_the_parts_bounds_on_the_shared_time_path():
    """Image data fixed at c, an exact x0-model for it, and constant label logits: the Gaussian
    part's bound is its closed-form prior + reconstruction (the diffusion term is 0) and the
    label part's bound is, in expectation, the cross-entropy of the logits (a one-token masked
    model with constant logits is the categorical itself). The label logits are NaN unless the
    model sees both parts at the same time and the image drawn at that time."""
    proc = _proc("x0")
    sch = proc.parts[0].schedule
    B = 512
    c = jnp.linspace(-0.8, 0.8, 16).reshape(1, 4, 4, 1)
    x0 = jnp.broadcast_to(c, (B, 4, 4, 1))
    y0 = jnp.asarray(np.arange(B) % K, jnp.int32)
    base = jnp.log(jnp.arange(1.0, K + 1.0))  # p(y) proportional to y + 1

    def model_fn(xs, ts):
        x, y = xs
        t_img, t_lab = ts
        a = sch.alpha(t_img).reshape(-1, 1, 1, 1)
        s = sch.sigma(t_img).reshape(-1, 1, 1, 1)
        z2 = jnp.mean(((x - a * c) / s) ** 2, axis=(1, 2, 3))
        ok = (t_img == t_lab) & (z2 > 0.05) & (z2 < 4.0)  # chi2 with 16 dof, over 16
        logits = jnp.where(ok[:, None], base[None, :], jnp.nan)
        return jnp.broadcast_to(c, x.shape), logits

    totals = jax.jit(jax.vmap(lambda k: proc.nelbo(model_fn, (x0, y0), k)))(jax.random.split(jax.random.key(0), 16))
    totals = np.asarray(totals, np.float64)
    assert np.all(np.isfinite(totals))
    t_min, d = 1e-4, 16
    one, tm = jnp.asarray(1.0), jnp.asarray(t_min)
    a1, s1 = float(sch.alpha(one)), float(sch.sigma(one))
    prior = 0.5 * a1**2 * float(jnp.sum(c**2)) / s1**2
    recon = 0.5 * d * (math.log(2 * math.pi) + 2 * (float(sch.log_sigma(tm)) - float(sch.log_alpha(tm))) + 1)
    logp = np.asarray(jax.nn.log_softmax(base), np.float64)
    ce = -logp[np.asarray(y0)].mean()
    per_key = totals.mean(axis=1)
    stderr = per_key.std(ddof=1) / math.sqrt(len(per_key))
    assert per_key.mean() == pytest.approx(prior + recon + ce, abs=4 * stderr + 1e-3)
    assert stderr < 0.1 * ce  # the check has power


# ---------------------------------------------------------------------------- the sampler
# A joint with four atoms: label y in {0, 1} (of K = 2), a 1-pixel image x0 in {-1, +1}.
P = np.array([[0.35, 0.15],   # y = 0: x0 = -1, +1
              [0.10, 0.40]])  # y = 1


def _exact_model(sch, prediction="x0"):
    """The exact denoiser of the four-atom joint: p(x0, y | x_t, y_t) over the atoms."""
    logp = jnp.log(jnp.asarray(P))
    atoms = jnp.asarray([-1.0, 1.0])

    def model_fn(xs, ts):
        x, y = xs
        t_img, t_lab = ts
        a, s = sch.alpha(t_img)[:, None], sch.sigma(t_img)[:, None]
        ll_x = -0.5 * ((x.reshape(-1, 1) - a * atoms[None, :]) / s) ** 2  # (B, 2 atoms)
        y_ok = jnp.where((y[:, None] == 2) | (y[:, None] == jnp.arange(2)[None, :]), 0.0, -jnp.inf)  # (B, 2 labels)
        w = logp[None] + ll_x[:, None, :] + y_ok[:, :, None]  # (B, y, x0)
        w = w - jax.scipy.special.logsumexp(w, axis=(1, 2), keepdims=True)
        x0_hat = jnp.sum(jnp.exp(w) * atoms[None, None, :], axis=(1, 2)).reshape(x.shape)
        label_logp = jax.scipy.special.logsumexp(w, axis=2)
        return x0_hat, label_logp

    return model_fn


def _atoms(x, y):
    x, y = np.asarray(x).reshape(-1), np.asarray(y)
    table = np.zeros((2, 2))
    np.add.at(table, (y, (x > 0).astype(int)), 1.0)
    return table / len(y)


@pytest.fixture(scope="module")
def small():
    proc = joint.product(diffjax.gaussian(schedules.cosine(), "x0"), discrete.masked(2))
    return proc, _exact_model(proc.parts[0].schedule)


def test_joint_samples_follow_the_exact_joint(small):
    proc, model_fn = small
    B = 8000
    (x, y), info = joint.sample(model_fn, jax.random.key(0), ((B, 1), (B,)), process=proc, solver="ddpm",
                                steps=200, grid="uniform_t")
    assert int(info["nfe"]) == 201
    assert np.all(np.abs(np.abs(np.asarray(x)) - 1.0) < 0.05)  # on the atoms
    tv = 0.5 * np.abs(_atoms(x, y) - P).sum()
    assert tv < 0.03, (_atoms(x, y), tv)


def test_clamping_the_image_classifies_and_the_label_generates_its_class(small):
    proc, model_fn = small
    B = 4000
    images = jnp.ones((B, 1))
    (x, y), _ = joint.sample(model_fn, jax.random.key(1), ((B, 1), (B,)), process=proc, steps=20,
                             x_init=(images, None), clamp=(True, False))
    np.testing.assert_array_equal(x, images)  # kept exactly
    p_y1 = P[1, 1] / P[:, 1].sum()  # p(y = 1 | x0 = +1)
    assert abs(np.mean(np.asarray(y)) - p_y1) < 0.03
    (_, y_argmax), _ = joint.sample(model_fn, jax.random.key(1), ((B, 1), (B,)), process=proc, steps=20,
                                    x_init=(images, None), clamp=(True, False), temperature=0.0)
    assert np.all(np.asarray(y_argmax) == 1)

    labels = jnp.ones((B,), jnp.int32)
    (x, y), _ = joint.sample(model_fn, jax.random.key(2), ((B, 1), (B,)), process=proc, solver="ddpm", steps=200,
                             grid="uniform_t", x_init=(None, labels), clamp=(False, True))
    np.testing.assert_array_equal(y, labels)
    p_x1 = P[1, 1] / P[1].sum()  # p(x0 = +1 | y = 1)
    assert abs(np.mean(np.asarray(x) > 0) - p_x1) < 0.03


def test_guidance_sharpens_towards_the_class_and_keeps_the_label(small):
    proc, model_fn = small
    B = 4000
    labels = jnp.ones((B,), jnp.int32)
    share = {}
    for w in (1.0, 3.0):
        (x, y), _ = joint.sample(model_fn, jax.random.key(2), ((B, 1), (B,)), process=proc, solver="ddpm",
                                 steps=100, grid="uniform_t", x_init=(None, labels), clamp=(False, True),
                                 guidance_scale=w)
        np.testing.assert_array_equal(y, labels)
        share[w] = float(np.mean(np.asarray(x) > 0))
    assert share[3.0] > share[1.0] + 0.05  # p(x0=+1 | y=1) / p(x0=+1) = 0.8 / 0.55 > 1


def test_joint_guidance_pulls_the_image_towards_the_revealed_label(small):
    proc, model_fn = small
    B = 4000
    diagonal = {}
    for w in (1.0, 3.0):
        (x, y), _ = joint.sample(model_fn, jax.random.key(4), ((B, 1), (B,)), process=proc, solver="ddpm",
                                 steps=100, grid="uniform_t", guidance_scale=w)
        table = _atoms(x, y)
        diagonal[w] = table[0, 0] + table[1, 1]
    assert abs(diagonal[1.0] - (P[0, 0] + P[1, 1])) < 0.03
    assert diagonal[3.0] > diagonal[1.0] + 0.05


def test_clamped_parts_are_fed_at_time_zero_and_kept_exactly():
    proc = _proc()
    B = 3
    x0, y0 = _data(B)

    def model_fn(xs, ts):
        x, y = xs
        t_img, t_lab = ts
        ok = jnp.all(t_lab == 0.0)  # the clamped label
        return jnp.where(ok, jnp.zeros_like(x), jnp.nan), jnp.zeros(y.shape + (K,))

    (x, y), _ = joint.sample(model_fn, jax.random.key(0), ((B, 4, 4, 1), (B,)), process=proc, steps=5,
                             solver="dpmpp_2m", x_init=(None, y0), clamp=(False, True))
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_array_equal(y, y0)
    assert x.dtype == jnp.float32 and y.dtype == y0.dtype


def test_joint_samples_have_the_shapes_and_dtypes_of_the_parts():
    proc = _proc()

    def model_fn(xs, ts):
        return jnp.zeros_like(xs[0]), jnp.zeros(xs[1].shape + (K,))

    (x, y), info = joint.sample(model_fn, jax.random.key(0), ((5, 4, 4, 1), (5,)), process=proc, steps=4)
    assert x.shape == (5, 4, 4, 1) and x.dtype == jnp.float32
    assert y.shape == (5,) and jnp.issubdtype(y.dtype, jnp.integer)
    assert np.all((np.asarray(y) >= 0) & (np.asarray(y) < K))  # every mask revealed
    assert info["ts"].shape == (5,)


@pytest.mark.parametrize("solver", ["ddim", "dpmpp_2m", "heun"])
def test_a_one_part_product_samples_exactly_as_diffjax_sample(solver):
    """The joint sampler runs the solvers' own steps: with one Gaussian part it is diffjax.sample."""
    sch = schedules.cosine()
    proc = joint.product(diffjax.gaussian(sch, "v"))
    w = jnp.linspace(-1.0, 1.0, 8).reshape(1, 8)

    def model(x, t):
        return jnp.tanh(x * w + t[:, None])

    x_init = jax.random.normal(jax.random.key(5), (6, 8))
    ref, _ = diffjax.sample(model, jax.random.key(0), (6, 8), schedule=sch, prediction="v", solver=solver,
                            steps=7, x_init=x_init)
    (got,), _ = joint.sample(lambda xs, ts: (model(xs[0], ts[0]),), jax.random.key(0), ((6, 8),), process=proc,
                             solver=solver, steps=7, x_init=(x_init,))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_one_joint_model_call_per_step():
    proc = _proc()
    calls = []

    def model_fn(xs, ts):
        calls.append(1)
        return jnp.zeros_like(xs[0]), jnp.zeros(xs[1].shape + (K,))

    _, info = joint.sample(model_fn, jax.random.key(0), ((2, 4, 4, 1), (2,)), process=proc, solver="dpmpp_2m",
                           steps=6)
    assert len(calls) == 2  # traced once in the scan body, once for the final call
    assert int(info["nfe"]) == 7


# ---------------------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    proc = _proc()

    def model_fn(xs, ts):
        return jnp.zeros_like(xs[0]), jnp.zeros(xs[1].shape + (K,))

    shapes = ((2, 4, 4, 1), (2,))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="clamp"):
        joint.sample(model_fn, key, shapes, process=proc, steps=2, clamp=(False, True))
    with pytest.raises(ValueError, match="guidance_scale"):  # nothing masked to condition on
        joint.sample(lambda xs, ts: (jnp.zeros_like(xs[0]),), key, shapes[:1],
                     process=joint.product(proc.parts[0]), steps=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        joint.sample(model_fn, key, shapes, process=proc, steps=2, guidance_scale=2.0, clamp=(True, False),
                     x_init=(jnp.zeros(shapes[0]), None))
    with pytest.raises(ValueError, match="shapes"):
        joint.sample(model_fn, key, ((2, 4, 4, 1),), process=proc, steps=2)
    with pytest.raises(ValueError, match="solver"):
        joint.sample(model_fn, key, shapes, process=proc, steps=2, solver="rk45")
    with pytest.raises(ValueError, match="output 1"):
        joint.sample(lambda xs, ts: (jnp.zeros_like(xs[0]), jnp.zeros(xs[1].shape + (3,))), key, shapes,
                     process=proc, steps=2)
    with pytest.raises(ValueError, match="x0"):
        proc.sample_marginal(key, (jnp.zeros(shapes[0]),), 0.5)
    with pytest.raises(ValueError, match="parts"):
        joint.product(diffjax.gaussian(schedules.cosine()), "masked")
