import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from core_oracle import Mixture, two_bumps


def sliced_w1(x, y, projections=128, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((x.shape[1], projections))
    d /= np.linalg.norm(d, axis=0, keepdims=True)
    return float(np.abs(np.sort(x @ d, 0) - np.sort(y @ d, 0)).mean())


GM = two_bumps()
COMP = [Mixture([1.0], GM.mu[k:k + 1], GM.var[k:k + 1]) for k in range(2)]
SCH = dj.schedules.cosine()
N = 4000


def draw(model, key=0, **kw):
    x, _ = dj.sample(model, jax.random.PRNGKey(key), (N, 2), schedule=SCH, prediction="eps", solver="dpmpp_3m",
                     steps=40, **kw)
    return np.asarray(x)


def log_p_y_given_x(x, y):
    """log p(y | x) at t ~ 0 for the mixture: log w_y N(x; mu_y, var_y) - log p(x)."""
    return np.asarray(jnp.log(GM.w[y]) + COMP[y].log_prob(jnp.asarray(x), 1.0, 0.0) - GM.log_prob(jnp.asarray(x), 1.0, 0.0))


def test_classifier_free_guidance_scale_one_is_the_conditional_and_zero_the_marginal():
    cond, uncond = COMP[0].model(SCH), GM.model(SCH)
    x1 = draw(dj.guidance.classifier_free(cond, uncond, 1.0))
    x0 = draw(dj.guidance.classifier_free(cond, uncond, 0.0))
    assert sliced_w1(x1, COMP[0].sample(1, N)) < 0.05
    assert sliced_w1(x0, GM.sample(1, N)) < 0.05
    # scale 3: the implicit classifier log p(y|x) rises and the samples contract
    x3 = draw(dj.guidance.classifier_free(cond, uncond, 3.0))
    lp1, lp3 = log_p_y_given_x(x1, 0).mean(), log_p_y_given_x(x3, 0).mean()
    assert lp3 > lp1, (lp1, lp3)
    assert (x3.std(0) < x1.std(0)).all(), (x1.std(0), x3.std(0))


def test_classifier_free_batched_matches_the_two_function_form_and_skips_at_scale_one():
    calls = []

    def model(x, t, y):
        jax.debug.callback(lambda b: calls.append(b), x.shape[0])
        return jnp.where((y == 0)[:, None], COMP[0].model(SCH)(x, t), GM.model(SCH)(x, t))

    x = jnp.asarray(GM.sample(0, 16))
    t = jnp.full((16,), 0.4)
    y = jnp.zeros((16,), jnp.int32)
    for scale in (0.0, 1.0, 2.5):
        a = dj.guidance.classifier_free_batched(model, y, 1, scale)(x, t)
        b = dj.guidance.classifier_free(COMP[0].model(SCH), GM.model(SCH), scale)(x, t)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    jax.effects_barrier()
    assert calls == [32, 16, 32], calls  # one batched call, a plain conditional call at scale 1


def test_classifier_guidance_with_the_exact_classifier_samples_the_conditional():
    def log_prob(x, t):  # exact noisy classifier log p(y=1 | x_t)
        a, s = SCH.alpha(t), SCH.sigma(t)
        return jnp.log(GM.w[1]) + COMP[1].log_prob(x, a, s) - GM.log_prob(x, a, s)

    model = dj.guidance.classifier(GM.model(SCH), log_prob, 1.0, schedule=SCH, prediction="eps")
    x = draw(model, key=1)
    assert sliced_w1(x, COMP[1].sample(2, N)) < 0.05


def test_cfg_interval_and_rescale_options():
    cond, uncond = COMP[0].model(SCH), GM.model(SCH)
    x = jnp.asarray(GM.sample(3, 8))
    t_in, t_out = jnp.full((8,), 0.5), jnp.full((8,), 0.95)
    f = dj.guidance.classifier_free(cond, uncond, 4.0, interval=(0.2, 0.8))
    np.testing.assert_allclose(f(x, t_out), cond(x, t_out), rtol=1e-6)
    np.testing.assert_allclose(f(x, t_in), uncond(x, t_in) + 4.0 * (cond(x, t_in) - uncond(x, t_in)), rtol=1e-5)
    r = dj.guidance.classifier_free(cond, uncond, 4.0, rescale=1.0)(x, t_in)
    np.testing.assert_allclose(np.std(np.asarray(r), -1), np.std(np.asarray(cond(x, t_in)), -1), rtol=1e-4)


def test_drop_condition_drops_at_rate_p():
    y = jnp.zeros((20000,), jnp.int32)
    out = dj.guidance.drop_condition(jax.random.PRNGKey(0), y, 0.2, 10)
    assert abs(float(jnp.mean(out == 10)) - 0.2) < 0.01 and set(np.unique(out)) == {0, 10}


@pytest.mark.parametrize("resample", [1, 4])
def test_inpainting_keeps_known_values_and_samples_the_conditional(resample):
    # Known first coordinate -1.0 (deep inside component 0): the second coordinate's exact
    # conditional is ~ N(0.5, 0.1) (component 0 has posterior weight > 0.999 there).
    x_known = jnp.tile(jnp.asarray([[-1.0, 0.0]]), (2000, 1))
    mask = jnp.asarray([True, False])
    x, info = dj.editing.inpaint(GM.model(SCH), jax.random.PRNGKey(0), x_known, mask, schedule=SCH, prediction="eps",
                                 solver="ddpm", steps=200, resample=resample)
    x = np.asarray(x)
    np.testing.assert_array_equal(x[:, 0], -1.0)
    assert int(info["nfe"]) == 200 * resample + 1
    assert abs(x[:, 1].mean() - 0.5) < 0.1 and abs(x[:, 1].std() - np.sqrt(0.1)) < 0.08, (x[:, 1].mean(), x[:, 1].std())


@pytest.mark.parametrize("solver", ["dpmpp_2m", "dpmpp_3m"])
def test_repaint_with_multistep_solvers_stays_finite_and_conditional(solver):
    # RePaint's jump back from t_next to t used to keep the solver's history, whose last
    # model output sits at t: the next step divided by a zero log-SNR difference (NaN).
    x_known = jnp.tile(jnp.asarray([[-1.0, 0.0]]), (2000, 1))
    mask = jnp.asarray([True, False])
    x, info = dj.editing.inpaint(GM.model(SCH), jax.random.PRNGKey(0), x_known, mask, schedule=SCH,
                                 prediction="eps", solver=solver, steps=50, resample=3)
    x = np.asarray(x)
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x[:, 0], -1.0)
    assert int(info["nfe"]) == 50 * 3 + 1
    assert abs(x[:, 1].mean() - 0.5) < 0.1, x[:, 1].mean()


def test_sdedit_interpolates_between_the_input_and_the_model():
    x_in = jnp.tile(jnp.asarray([[3.0, 3.0]]), (2000, 1))  # far from the data
    near, _ = dj.editing.sdedit(GM.model(SCH), jax.random.PRNGKey(0), x_in, 0.05, schedule=SCH, prediction="eps")
    far, _ = dj.editing.sdedit(GM.model(SCH), jax.random.PRNGKey(1), x_in, 1.0, schedule=SCH, prediction="eps")
    assert np.abs(np.asarray(near) - 3.0).mean() < 0.5
    assert sliced_w1(np.asarray(far), GM.sample(4, 2000)) < 0.06


def test_invert_and_edit_with_the_same_model_reconstructs():
    x = jnp.asarray(GM.sample(5, 64))
    out, info = dj.editing.invert_and_edit(GM.model(SCH), GM.model(SCH), x, schedule=SCH, prediction="eps",
                                           solver="dpmpp_2m", steps=100, t_max=0.8, denoise_final=False)
    assert np.abs(np.asarray(out) - np.asarray(x)).max() < 2e-2


def test_inpaint_refuses_solvers_without_a_step_and_singular_starts():
    x_known, mask = jnp.zeros((4, 2)), jnp.asarray([True, False])
    with pytest.raises(ValueError, match="fixed-grid solver; 'rk45'"):
        dj.editing.inpaint(GM.model(SCH), jax.random.PRNGKey(0), x_known, mask, schedule=SCH,
                           prediction="eps", solver="rk45")
    # eps says nothing about x0 where alpha = 0 (rectified flow at t = 1), as in diffjax.sample
    with pytest.raises(ValueError, match="cannot be converted to x0 where alpha = 0"):
        dj.editing.inpaint(lambda x, t: x, jax.random.PRNGKey(0), x_known, mask,
                           schedule=dj.schedules.rectified_flow(), prediction="eps", steps=4)


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_classifier_guidance_shifts_the_score_by_the_scaled_log_prob_gradient(prediction):
    """Dhariwal & Nichol (2021), Alg. 2: eps_guided = eps - sigma * scale * grad log p(y | x_t);
    in data prediction (Tweedie, x0 = (x + sigma^2 score) / alpha) x0_guided = x0 + sigma^2 / alpha
    * scale * grad. The gradient by central finite differences in float64."""
    c, w = np.asarray([0.4, -0.9]), np.asarray([1.5, 0.7])

    def log_prob(x, t):
        return -0.5 * jnp.sum(w * (x - c) ** 2, -1) + jnp.sin(x[:, 0] * x[:, 1]) + 0.0 * t

    def log_prob_np(x):
        return -0.5 * np.sum(w * (x - c) ** 2, -1) + np.sin(x[:, 0] * x[:, 1])

    x = np.asarray(GM.sample(6, 8), np.float64)
    t = jnp.full((8,), 0.45)
    a, s = float(SCH.alpha(0.45)), float(SCH.sigma(0.45))
    d = 1e-5
    grad = np.stack([(log_prob_np(x + d * e) - log_prob_np(x - d * e)) / (2 * d) for e in np.eye(2)], -1)
    scale = 2.5
    base = GM.model(SCH, prediction)
    got = jax.jit(dj.guidance.classifier(base, log_prob, scale, schedule=SCH, prediction=prediction))(
        jnp.asarray(x, jnp.float32), t)
    plain = np.asarray(base(jnp.asarray(x, jnp.float32), t), np.float64)
    want = plain - s * scale * grad if prediction == "eps" else plain + s**2 / a * scale * grad
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_renoise_composed_with_the_forward_marginal_is_the_forward_marginal():
    """x_s ~ q(x_s | x0) then renoise to t > s must give q(x_t | x0) = N(alpha_t x0, sigma_t^2)
    (the Markov property of the forward process)."""
    n, s, t = 20000, 0.3, 0.6
    x0 = jnp.tile(jnp.asarray([[0.8, -1.5]]), (n, 1))
    sch = dj.schedules.linear_vp()
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x_s = float(sch.alpha(s)) * x0 + float(sch.sigma(s)) * jax.random.normal(k1, x0.shape)
    x_t = np.asarray(jax.jit(dj.editing.renoise)(k2, x_s, jnp.float32(s), jnp.float32(t), sch), np.float64)
    a_t, s_t = float(sch.alpha(t)), float(sch.sigma(t))
    np.testing.assert_array_less(np.abs(x_t.mean(0) - a_t * np.asarray(x0[0])), 5 * s_t / np.sqrt(n))
    np.testing.assert_allclose(x_t.std(0), s_t, rtol=5 * np.sqrt(0.5 / n))


def test_inpainting_known_region_is_a_fresh_forward_draw_at_every_model_call():
    """The replacement method: what the model sees at grid time t in the known region is
    alpha(t) x_known + sigma(t) z (mean and std over the batch), at the first call (t_max) and
    after every step (projected at the step's end time)."""
    sch = dj.schedules.linear_vp()
    seen = {}
    base = GM.model(sch)

    def spy(x, t):
        jax.debug.callback(lambda tt, xx: seen.__setitem__(float(np.asarray(tt)[0]), np.asarray(xx)), t, x)
        return base(x, t)

    n = 4000
    ts = np.asarray([1.0, 0.6, 0.35, 0.2, 0.1, 0.03], np.float32)
    x_known = jnp.tile(jnp.asarray([[-1.0, 0.0]]), (n, 1))
    jax.jit(lambda key: dj.editing.inpaint(spy, key, x_known, jnp.asarray([True, False]), schedule=sch,
                                           prediction="eps", solver="ddpm", ts=jnp.asarray(ts)))(jax.random.PRNGKey(1))
    jax.effects_barrier()
    for t in ts:
        known = seen[float(t)][:, 0].astype(np.float64)
        a, s = float(sch.alpha(t)), float(sch.sigma(t))
        assert abs(known.mean() + a) < 5 * s / np.sqrt(n), (t, known.mean(), -a)
        assert abs(known.std() - s) < 5 * s * np.sqrt(0.5 / n), (t, known.std(), s)
