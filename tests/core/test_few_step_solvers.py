"""iPNDM and DEIS (the multistep Adams-Bashforth solvers in sigma^ = sigma / alpha and in t):
observed order of convergence against the closed-form ODE solution of Gaussian data, single
steps against independent hand-written recursions, and their options.

Also the singular ends (rectified flow from t = 1 to t = 0, encode up to t = 1) with their
gradients, and encode against sample.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

import diffjax as dj
from core_oracle import gaussian, two_bumps

NEW = ("ipndm", "deis")
G = gaussian()
MU, VAR = G.mu[0], G.var[0]


def _exact_ode(sch, x_init, t_max, t_min):
    """The probability-flow ODE of the Gaussian data from (t_max, x_init) to t_min, closed form."""
    a0, s0 = (float(c) for c in (sch.alpha(t_min), sch.sigma(t_min)))
    a1, s1 = (float(c) for c in (sch.alpha(t_max), sch.sigma(t_max)))
    return a0 * MU + (np.asarray(x_init, np.float64) - a1 * MU) * np.sqrt((a0**2 * VAR + s0**2) / (a1**2 * VAR + s1**2))


def _eps64(sch):
    """The exact eps model of the Gaussian data, in float64 (under x64)."""
    def fn(x, t):
        a, s = sch.alpha(t)[:, None], sch.sigma(t)[:, None]
        x0 = MU + a * VAR / (a**2 * VAR + s**2) * (x - a * MU)
        return (x - a * x0) / s
    return fn


# ---------------------------------------------------------------------------------------------
# (a) order of convergence
# ---------------------------------------------------------------------------------------------
# Max error against the closed form on a uniform_logsnr grid (logsnr -12..12, t_min = 1e-2; x64,
# the oracle model computes in float32: error floor ~1e-7), between 64 and 128 steps for deis
# (measured slopes 1.97 / 2.96 / 4.05 at orders 2 / 3 / 4) and between 128 and 256 for ipndm
# (1.98 / 2.96 / 3.85; its 4th order is pre-asymptotic below: 3.33 / 3.66 from 32 -> 64 / 64 -> 128).
STEPS = {"ipndm": (128, 256), "deis": (64, 128)}


# Orders 3 and 4 here; every order 2..4 is also checked exactly, step by step, by the recursions below.
@pytest.mark.parametrize("solver,order", [(s, k) for s in NEW for k in (3, 4)])
def test_observed_order_of_convergence_is_the_order_option(solver, order):
    sch = dj.schedules.cosine(logsnr_min=-12.0, logsnr_max=12.0)
    t_min = 1e-2
    with jax.enable_x64(True):
        x_init = jnp.asarray(np.random.default_rng(1).standard_normal((64, 2)), jnp.float64)
        exact = _exact_ode(sch, x_init, 1.0, t_min)
        errs = []
        for steps in STEPS[solver]:
            x, _ = dj.sample(G.model(sch), jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps",
                             solver=solver, steps=steps, grid="uniform_logsnr", t_min=t_min, x_init=x_init,
                             denoise_final=False, order=order)
            errs.append(np.abs(np.asarray(x) - exact).max())
    observed = np.log2(errs[0] / errs[1])  # the step counts double
    assert abs(observed - order) < 0.25, (errs, observed)


# ---------------------------------------------------------------------------------------------
# (b) single steps against independent recursions
# ---------------------------------------------------------------------------------------------
def test_order_1_is_ddim():
    """(The warm-up, order min(order, n + 1) on the n-th step, is checked by the recursions below.)"""
    sch = dj.schedules.cosine()
    model = two_bumps().model(sch)
    x_init = jnp.asarray(np.random.default_rng(0).standard_normal((16, 2)), jnp.float32)

    def run(name, **opts):
        return np.asarray(dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps",
                                    solver=name, steps=6, grid="uniform_logsnr", x_init=x_init, denoise_final=False,
                                    **opts)[0])

    ddim = run("ddim")
    for solver in NEW:
        np.testing.assert_allclose(run(solver, order=1), ddim, rtol=1e-6, atol=1e-6, err_msg=solver)


AB = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def test_ipndm_on_a_grid_uniform_in_sigma_hat_is_classical_adams_bashforth():
    """On sigma^_i = sigma^_0 + i d the variable-step weights are the fixed-step Adams-Bashforth
    ones; the recursion y_{n+1} = y_n + d sum_j b_j eps_{n-j} in y = x / alpha, warm-up at order
    min(order, n + 1), written out here with the same (float64) model."""
    sch = dj.schedules.cosine()
    with jax.enable_x64(True):
        sh = np.linspace(6.0, 0.3, 9)  # sigma^ from 6 down to 0.3, d = -0.7125
        d = sh[1] - sh[0]
        ts = sch.t_of_logsnr(jnp.asarray(-2.0 * np.log(sh)))
        model = _eps64(sch)
        x_init = jnp.asarray(np.random.default_rng(2).standard_normal((8, 2)) * sh[0], jnp.float64)
        outs = {}
        for order in (2, 3, 4):
            got, _ = dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps",
                               solver="ipndm", ts=ts, x_init=x_init, denoise_final=False, order=order)
            a = np.asarray(sch.alpha(ts))
            y, hist = np.asarray(x_init) / a[0], []
            for n in range(len(ts) - 1):
                hist.insert(0, np.asarray(model(jnp.asarray(a[n] * y), jnp.full((8,), ts[n]))))
                b = AB[min(order, n + 1)]
                y = y + d * sum(bj * e for bj, e in zip(b, hist))
            want = a[-1] * y
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)
            outs[order] = want
    assert min(np.abs(outs[i] - outs[j]).max() for i, j in ((2, 3), (3, 4))) > 1e-4  # the orders are told apart


def test_deis_steps_match_a_recursion_with_coefficients_from_adaptive_quadrature():
    """tAB-DEIS written out from the paper: y = x / alpha, y_{n+1} = y_n + sum_j eps_j C_j with
    C_j = int_{t_n}^{t_{n+1}} (d sigma^ / d tau) L_j(tau) d tau, L_j the Lagrange basis in t on
    the last min(order, n + 1) times, the integrals by scipy's adaptive quadrature (the solver uses
    Gauss-Legendre on the integral by parts)."""
    sch = dj.schedules.linear_vp(0.1, 20.0)
    with jax.enable_x64(True):
        ts = np.asarray(dj.grids.uniform_t(6, 1.0, 1e-2, jnp.float64))
        model = _eps64(sch)
        x_init = jnp.asarray(np.random.default_rng(3).standard_normal((8, 2)), jnp.float64)
        outs = {}

        def dsh(tau):  # d (sigma / alpha) / dt for linear_vp: sigma / alpha = sqrt(e^g - 1), g = -2 log alpha
            b0, b1 = 0.1, 20.0
            g, dg = 0.5 * tau**2 * (b1 - b0) + tau * b0, tau * (b1 - b0) + b0
            return np.exp(g) * dg / (2.0 * np.sqrt(np.expm1(g)))

        for order in (2, 3, 4):
            got, _ = dj.sample(model, jax.random.PRNGKey(0), x_init.shape, schedule=sch, prediction="eps",
                               solver="deis", ts=jnp.asarray(ts), x_init=x_init, denoise_final=False, order=order)
            a = np.asarray(sch.alpha(jnp.asarray(ts)))
            y, hist = np.asarray(x_init) / a[0], []
            for n in range(len(ts) - 1):
                hist.insert(0, np.asarray(model(jnp.asarray(a[n] * y), jnp.full((8,), ts[n]))))
                nodes = ts[n::-1][:min(order, n + 1)]
                for j, e in enumerate(hist[:len(nodes)]):
                    others = [nodes[m] for m in range(len(nodes)) if m != j]
                    basis = lambda tau, j=j, others=others: np.prod([(tau - o) / (nodes[j] - o) for o in others])
                    c, _ = quad(lambda tau: dsh(tau) * basis(tau), ts[n], ts[n + 1], epsabs=1e-13, epsrel=1e-12)
                    y = y + c * e
            # the solver's 8-point quadrature: ~5e-7 here, where d sigma^ / dt ~ t^(-1/2) near t_min = 1e-2
            np.testing.assert_allclose(np.asarray(got), a[-1] * y, rtol=2e-6, atol=2e-6)
            outs[order] = a[-1] * y
    assert min(np.abs(outs[i] - outs[j]).max() for i, j in ((2, 3), (3, 4))) > 1e-4  # the orders are told apart


# ---------------------------------------------------------------------------------------------
# (c) options
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", NEW)
def test_order_must_be_a_static_int_in_1_to_4(solver):
    sch = dj.schedules.cosine()
    model = G.model(sch)

    def run(**opts):
        return dj.sample(model, jax.random.PRNGKey(0), (4, 2), schedule=sch, prediction="eps", solver=solver, steps=3,
                         **opts)

    for bad in (0, -1, 1.5, True, "2", None):
        with pytest.raises(ValueError, match="order must be an int"):
            run(order=bad)
    with pytest.raises(ValueError, match=r"order must be an int in 1\.\.4, got 5"):
        run(order=5)
    with pytest.raises(ValueError, match="order must be an int .*cannot be traced"):
        jax.jit(lambda k: run(order=k)[0])(2)
    assert dj.solvers.get(solver)().order == {"ipndm": 4, "deis": 3}[solver]
    assert dj.solvers.get(solver)(order=np.int64(2)).order == 2


# ---------------------------------------------------------------------------------------------
# the singular ends (the solver-wide checks of test_solvers.py, on these two)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", NEW)
def test_singular_ends_are_finite_with_finite_gradients_and_the_model_is_never_called_at_sigma_0(solver):
    """Rectified flow from t = 1 (alpha = 0: the first step is DDIM, and iPNDM never uses its node)
    to t_min = 0 (sigma = 0: the last step is the denoising step, no model call there), and encode
    up to t = 1: finite values, model calls counted, and d/d(x_init, model scale, grid) NaN-free, as
    the finite stand-ins promise."""
    sch = dj.schedules.rectified_flow()
    base = two_bumps().model(sch, "flow")
    calls = []

    def counted(x, t):
        jax.debug.callback(lambda tt: calls.append(float(np.asarray(tt)[0])), t)
        return base(x, t)

    x, info = dj.sample(counted, jax.random.PRNGKey(0), (64, 2), schedule=sch, prediction="flow", solver=solver,
                        steps=6, t_min=0.0, t_max=1.0)
    jax.effects_barrier()
    assert np.isfinite(np.asarray(x)).all()
    assert int(info["nfe"]) == len(calls) == 6 and 0.0 not in calls and 1.0 in calls

    x_init = jnp.asarray(np.random.default_rng(0).standard_normal((8, 2)), jnp.float32)

    def run(scale, x, ts):
        return dj.sample(lambda x, t: scale * base(x, t), jax.random.PRNGKey(0), x.shape, schedule=sch,
                         prediction="flow", solver=solver, ts=ts, x_init=x, denoise_final=False)[0]

    def enc(scale, x):
        return dj.encode(lambda x, t: scale * base(x, t), x, schedule=sch, prediction="flow", solver=solver, steps=5,
                         grid="uniform_t", t_max=1.0)[0]

    def loss(scale, x, ts):
        return jnp.sum(run(scale, x, ts) ** 2) + jnp.sum(enc(scale, x) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(1.0, x_init, dj.grids.uniform_t(5, 1.0, 1e-3))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("solver", NEW)
def test_encode_inverts_sample_to_discretisation_error(solver):
    sch = dj.schedules.cosine()
    model = two_bumps().model(sch)
    x0 = jnp.asarray(two_bumps().sample(0, 64))
    kw = dict(schedule=sch, prediction="eps", solver=solver, steps=50, t_min=1e-3, t_max=0.9)
    z, _ = dj.encode(model, x0, **kw)
    back, _ = dj.sample(model, jax.random.PRNGKey(0), x0.shape, x_init=z, denoise_final=False, **kw)
    assert dj.solvers.get(solver)().deterministic
    assert np.abs(np.asarray(back) - np.asarray(x0)).max() < 1e-2
