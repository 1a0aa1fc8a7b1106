"""diffjax.few_step against closed forms: for Gaussian data N(MU, S^2) (per dimension) the
probability-flow ODE maps are affine, so the average velocity of MeanFlow, the consistency
function and the exact denoiser are all known exactly. Float64 throughout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import few_step, sample, schedules
from diffjax.parameterization import convert

MU = np.array([1.5, -0.5])  # numpy float64: float64 arrays under x64
S = np.array([0.5, 1.2])
B = 256


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# ------------------------------------------------------------------ rectified-flow closed forms
def rf_std(t):
    """Marginal std of z_t = (1 - t) x + t eps with x ~ N(MU, S^2), shape (B, 2)."""
    t = t[:, None]
    return jnp.sqrt((1 - t) ** 2 * S ** 2 + t ** 2)


def u_exact(z, r, t):
    """The exact average velocity (z_t - z_r) / (t - r) along the ODE: z_r = (1 - r) MU +
    std_r w with w = (z_t - (1 - t) MU) / std_t constant on a trajectory; at r = t its limit,
    the marginal velocity."""
    st, sr = rf_std(t), rf_std(r)
    w = (z - (1 - t[:, None]) * MU) / st
    d = (t - r)[:, None]
    same = jnp.abs(d) < 1e-12
    dstd = (-(1 - t[:, None]) * S ** 2 + t[:, None]) / st
    return -MU + jnp.where(same, dstd, (st - sr) / jnp.where(same, 1.0, d)) * w


def v_marginal(z, t):
    return u_exact(z, t, t)


def _draws(seed):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    t = jax.random.uniform(k1, (B,), jnp.float64, 0.02, 1.0)
    r = t * jax.random.uniform(k2, (B,), jnp.float64)
    z = 1.3 * jax.random.normal(k3, (B, 2), jnp.float64)
    return z, r, t


def test_meanflow_target_is_the_closed_form_average_velocity():
    z, r, t = _draws(0)
    u, target = few_step.meanflow_target(u_exact, z, v_marginal(z, t), r, t)
    np.testing.assert_allclose(u, u_exact(z, r, t), atol=0)
    np.testing.assert_allclose(target, u_exact(z, r, t), atol=1e-12)
    # A network that is not the average velocity gets a different target.
    wrong = lambda z, r, t: u_exact(z, r, t) + 0.3 * r[:, None] * z
    u, target = few_step.meanflow_target(wrong, z, v_marginal(z, t), r, t)
    assert float(jnp.max(jnp.abs(u - target))) > 0.05


def test_meanflow_jvp_total_derivative_matches_finite_difference():
    z, r, t = _draws(1)
    fn = lambda z, r, t: u_exact(z, r, t) + jnp.sin(3 * t)[:, None] * z ** 2 * (1 + r[:, None])
    v = v_marginal(z, t)
    u, target = few_step.meanflow_target(fn, z, v, r, t)
    h = 1e-6
    fd = (fn(z + h * v, r, t + h) - fn(z - h * v, r, t - h)) / (2 * h)  # d/dt along (v, 0, 1)
    np.testing.assert_allclose(target, v - (t - r)[:, None] * fd, atol=1e-7)


def test_meanflow_loss_zero_exactly_for_the_exact_average_velocity():
    # A point mass: the conditional velocity eps - x is the marginal one, so the loss of the
    # exact u(z, r, t) = (z - x) / t is zero with the conditional target.
    x = jnp.broadcast_to(MU, (B, 2))
    exact = lambda z, r, t: (z - MU) / t[:, None]
    loss, aux = few_step.meanflow_loss(exact, x, jax.random.key(2), average_share=0.5)
    assert float(jnp.max(aux["mse"])) < 1e-20 and float(jnp.max(loss)) < 1e-16
    perturbed = lambda z, r, t: exact(z, r, t) + 0.1 * (t - r)[:, None]
    loss, aux = few_step.meanflow_loss(perturbed, x, jax.random.key(2), average_share=0.5)
    assert float(jnp.mean(aux["mse"])) > 1e-4 and float(jnp.mean(loss)) > 0.1
    # Gaussian data with the marginal velocity (a teacher): zero for the exact u, also r < t.
    x = MU + S * jax.random.normal(jax.random.key(3), (B, 2), jnp.float64)
    loss, _ = few_step.meanflow_loss(u_exact, x, jax.random.key(4), average_share=0.5,
                                     velocity_fn=v_marginal)
    assert float(jnp.max(loss)) < 1e-16
    wrong = lambda z, r, t: u_exact(z, r, t) + 0.1 * r[:, None] * z
    loss, _ = few_step.meanflow_loss(wrong, x, jax.random.key(4), average_share=0.5,
                                     velocity_fn=v_marginal)
    assert float(jnp.mean(loss)) > 0.1
    # (t, r): sorted logit-normal draws, about the requested share with r < t.
    r, t = few_step.meanflow_times(jax.random.key(5), 4000, average_share=0.25)
    assert bool(jnp.all(r <= t)) and 0.22 < float(jnp.mean(r < t)) < 0.28


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_meanflow_sampler_maps_noise_to_exact_samples(steps):
    key = jax.random.key(6)
    x, info = few_step.meanflow_sample(u_exact, key, (1000, 2), steps=steps, dtype=jnp.float64)
    eps = jax.random.normal(key, (1000, 2), jnp.float64)
    np.testing.assert_allclose(x, MU + S * eps, atol=1e-12)  # z_0 of eps's trajectory
    assert info["nfe"] == steps


# ------------------------------------------------------------------ cosine-schedule closed forms
SCHED = schedules.cosine()


def f_exact(x, t):
    """The consistency function: x_t's trajectory ends at MU + S w, w standardised x_t."""
    a, s = SCHED.alpha(t)[:, None], SCHED.sigma(t)[:, None]
    return MU + S * (x - a * MU) / jnp.sqrt(a ** 2 * S ** 2 + s ** 2)


def denoiser(x, t):
    """E[x0 | x_t]."""
    a, s = SCHED.alpha(t)[:, None], SCHED.sigma(t)[:, None]
    return MU + a * S ** 2 * (x - a * MU) / (a ** 2 * S ** 2 + s ** 2)


@pytest.mark.parametrize("prediction", ["x0", "v", "eps", "flow"])
def test_consistency_loss_zero_for_the_exact_consistency_function(prediction):
    x0 = MU + S * jax.random.normal(jax.random.key(7), (B, 2), jnp.float64)
    key = jax.random.key(8)
    net = lambda x, t: convert(f_exact(x, t), x, t, SCHED, source="x0", target=prediction)
    loss, aux = few_step.consistency_loss(net, x0, key, schedule=SCHED, prediction=prediction,
                                          teacher_x0_fn=denoiser)
    assert float(jnp.max(loss)) < 1e-18 and float(jnp.max(aux["tangent_rms"])) < 1e-9
    bad = lambda x, t: convert(f_exact(x, t) + 0.2 * t[:, None] * x, x, t, SCHED, source="x0",
                               target=prediction)
    loss, aux = few_step.consistency_loss(bad, x0, key, schedule=SCHED, prediction=prediction,
                                          teacher_x0_fn=denoiser)
    assert float(jnp.mean(loss)) > 0.05 and float(jnp.mean(aux["tangent_rms"])) > 0.05


def test_consistency_tangent_matches_finite_difference_and_training_velocity():
    z, _, t = _draws(9)
    t = 0.9 * t
    fn = lambda x, t: f_exact(x, t) + jnp.cos(2 * t)[:, None] * x ** 2
    vel = convert(denoiser(z, t), z, t, SCHED, source="x0", target="flow")
    f, dfdt = few_step.consistency_tangent(fn, z, t, vel)
    h = 1e-6
    fd = (fn(z + h * vel, t + h) - fn(z - h * vel, t - h)) / (2 * h)
    np.testing.assert_allclose(f, fn(z, t), atol=0)
    np.testing.assert_allclose(dfdt, fd, atol=1e-6)
    # Without a teacher the tangent follows the conditional velocity, along which the exact
    # consistency function is not constant: a positive loss (consistency training).
    x0 = MU + S * jax.random.normal(jax.random.key(10), (B, 2), jnp.float64)
    loss, _ = few_step.consistency_loss(f_exact, x0, jax.random.key(11), schedule=SCHED,
                                        prediction="x0")
    assert float(jnp.mean(loss)) > 0.01


def test_consistency_sampler_gives_exact_samples():
    key = jax.random.key(12)
    x, info = few_step.consistency_sample(f_exact, key, (1000, 2), schedule=SCHED, steps=1,
                                          dtype=jnp.float64)
    eps = jax.random.normal(jax.random.split(key)[0], (1000, 2), jnp.float64)
    # alpha(1) = sin(exp(-10)) ~ 4.5e-5 on the cosine schedule: the start is eps alone.
    np.testing.assert_allclose(x, MU + S * eps, atol=1e-4)
    assert info["nfe"] == 1
    x, info = few_step.consistency_sample(f_exact, key, (40000, 2), schedule=SCHED, steps=2,
                                          dtype=jnp.float64)
    assert info["nfe"] == 2 and np.allclose(info["ts"], [1.0, 0.5])
    np.testing.assert_allclose(x.mean(0), MU, atol=0.02)
    np.testing.assert_allclose(x.std(0), S, rtol=0.02)


# ------------------------------------------------------------------ progressive distillation
@pytest.mark.parametrize("t0,dt", [(1.0, 0.25), (0.75, 0.25), (0.25, 0.25), (0.5, 0.125)])
def test_progressive_target_is_two_teacher_ddim_steps(t0, dt):
    key = jax.random.key(13)
    x0 = MU + S * jax.random.normal(key, (B, 2), jnp.float64)
    t = jnp.full((B,), t0)
    x_t = SCHED.alpha(t)[:, None] * x0 + SCHED.sigma(t)[:, None] * jax.random.normal(
        jax.random.key(14), (B, 2), jnp.float64)
    target = few_step.progressive_target(denoiser, x_t, t, dt, schedule=SCHED)
    # Two DDIM steps of the teacher by diffjax's own DDIM solver, from x_t on [t, t-dt/2, t-dt].
    two, info = sample(denoiser, key, (B, 2), schedule=SCHED, prediction="x0", solver="ddim",
                       ts=jnp.array([t0, t0 - dt / 2, t0 - dt]), x_init=x_t, denoise_final=False)
    assert int(info["nfe"]) == 2
    # One DDIM step t -> t - dt with the target as the x0 estimate lands there.
    a, s = SCHED.alpha(t)[:, None], SCHED.sigma(t)[:, None]
    a2, s2 = SCHED.alpha(t - dt)[:, None], SCHED.sigma(t - dt)[:, None]
    one = a2 * target + s2 * (x_t - a * target) / s
    np.testing.assert_allclose(one, two, atol=1e-10)
    # ... and the target is not simply the teacher's own one-step estimate.
    assert float(jnp.max(jnp.abs(target - denoiser(x_t, t)))) > 1e-3


def test_progressive_loss_on_the_student_grid():
    x0 = MU + S * jax.random.normal(jax.random.key(15), (B, 2), jnp.float64)
    loss, aux = few_step.progressive_loss(denoiser, denoiser, x0, jax.random.key(16),
                                          schedule=SCHED, prediction="x0", student_steps=2)
    assert loss.shape == (B,) and float(jnp.mean(loss)) > 0  # the teacher is not its student
    with pytest.raises(ValueError, match="steps"):
        few_step.progressive_loss(denoiser, denoiser, x0, jax.random.key(16), schedule=SCHED,
                                  prediction="x0", student_steps=0)


@pytest.mark.parametrize("teacher", [True, False])
def test_discrete_consistency_tangent_tends_to_the_continuous_one(teacher):
    # dt set: df/dt by a finite difference along the teacher's DDIM step (distillation) or
    # the same-noise forward process (training); as dt -> 0 it is the jvp tangent.
    x0 = MU + S * jax.random.normal(jax.random.key(17), (B, 2), jnp.float64)
    net = lambda x, t: convert(f_exact(x, t) + 0.2 * t[:, None] * x, x, t, SCHED, source="x0",
                               target="v")
    kw = dict(schedule=SCHED, prediction="v", teacher_x0_fn=denoiser if teacher else None,
              t_min=0.05, t_max=0.95)
    key = jax.random.key(18)
    cont, aux_c = few_step.consistency_loss(net, x0, key, **kw)
    disc, aux_d = few_step.consistency_loss(net, x0, key, dt=1e-6, **kw)
    np.testing.assert_allclose(aux_d["tangent_rms"], aux_c["tangent_rms"], rtol=1e-4)
    np.testing.assert_allclose(disc, cont, rtol=1e-4)
    coarse, _ = few_step.consistency_loss(net, x0, key, dt=0.1, **kw)
    assert float(jnp.max(jnp.abs(coarse - cont))) > 1e-6  # a real finite difference
    with pytest.raises(ValueError, match="dt"):
        few_step.consistency_loss(net, x0, key, dt=0.0, **kw)
