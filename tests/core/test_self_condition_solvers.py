"""Self-conditioning in the Gaussian samplers (``diffjax.sample(..., self_condition=True)``).

A hand-written ``model_fn(x, t, x0_prev)`` records every call (through an ordered
``jax.debug.callback``); call k must receive exactly the x0 estimate implied by call k - 1's
output (zeros at the first call), for single-step, multistep, two-call (heun) and corrector
(pc) solvers, through the final denoising call and across RePaint jump-backs. A model that
ignores ``x0_prev`` gives exactly the samples of the plain call (the carry disturbs neither the
keys nor the steps). Bad input: the errors name the argument.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax
from diffjax import schedules
from diffjax.parameterization import to_x0_eps
from diffjax.solvers import driver
from diffjax.solvers._base import SelfConditionedDenoiser

SCH = schedules.cosine()
SHAPE = (3, 4)


def net(x, t, p):
    """A deterministic 'v' model whose output depends on its self-conditioning input."""
    return 0.5 * x + 0.4 * jnp.tanh(p + 1.0) - 0.2 * t[:, None]


def x0_of(call):
    """The x0 estimate the sampler must carry out of a recorded call (x, t, x0_prev)."""
    x, t, p = (jnp.asarray(v) for v in call)
    return np.asarray(to_x0_eps(net(x, t, p), x, t, SCH, "v")[0])


def assert_chained(calls):
    """Call 0 gets zeros; call k gets the x0 estimate of call k - 1."""
    assert len(calls) >= 2
    np.testing.assert_array_equal(calls[0][2], np.zeros(SHAPE, np.float32))
    for k in range(1, len(calls)):
        np.testing.assert_allclose(calls[k][2], x0_of(calls[k - 1]), rtol=1e-5, atol=1e-5,
                                   err_msg=f"call {k} did not get the estimate of call {k - 1}")
        assert not np.allclose(calls[k][2], 0.0)


@pytest.mark.parametrize("solver,t_min,options", [
    ("euler", 1e-3, {}),        # single step
    ("ddim", 1e-3, {"eta": 0.5}),
    ("dpmpp_2m", 1e-3, {}),     # multistep (carry is a MultistepState)
    ("unipc", 1e-3, {}),
    ("heun", 1e-3, {}),         # two calls per step, the second inside lax.cond
    ("heun", 0.0, {}),          # sigma(t_min) = 0: last step one call, final step denoises
    ("pc", 1e-3, {"corrector_steps": 2}),  # corrector calls inside a lax.scan of the step
])
def test_every_call_gets_the_estimate_of_the_call_before(solver, t_min, options, record_calls):
    model_fn, calls = record_calls(net)
    x, info = diffjax.sample(model_fn, jax.random.key(0), SHAPE, schedule=SCH, prediction="v", solver=solver,
                             steps=4, t_min=t_min, self_condition=True, **options)
    jax.effects_barrier()
    assert len(calls) == int(info["nfe"])
    assert_chained(calls)
    if t_min > 0:  # denoise_final: the result is the last call's x0 estimate
        np.testing.assert_allclose(np.asarray(x), x0_of(calls[-1]), rtol=1e-5, atol=1e-5)
    if solver == "heun" and t_min > 0:
        assert len(calls) == 2 * 4 + 1  # both calls of every step were chained


def test_the_estimate_survives_jump_backs(record_calls):
    """run_steps with a project hook and repeat = 2 (RePaint): the solver restarts after each
    jump back, the carried estimate does not; afterwards the denoiser holds the last one."""
    model_fn, calls = record_calls(net)
    den = SelfConditionedDenoiser(model_fn, SCH, "v")
    solv = driver.make_solver("dpmpp_2m", {})
    ts = jnp.linspace(1.0, 1e-3, 4)
    x_init = jax.random.normal(jax.random.key(1), SHAPE)
    x, nfe = driver.run_steps(solv, den, x_init, ts, jax.random.key(2), project=lambda x, t, k: 0.9 * x,
                              repeat=2, jump_back=lambda x, t_next, t, k: 1.1 * x)
    jax.effects_barrier()
    assert len(calls) == int(nfe) == 6
    assert_chained(calls)
    np.testing.assert_allclose(np.asarray(den.x0_prev), x0_of(calls[-1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("solver,options", [("euler", {}), ("heun", {}), ("dpmpp_2m", {}), ("unipc", {}),
                                            ("ddim", {"eta": 0.7}), ("pc", {}), ("ipndm", {}),
                                            ("ddpm", {})])
def test_a_model_that_ignores_the_estimate_gives_the_plain_samples(solver, options):
    def plain(x, t):
        return net(x, t, jnp.zeros_like(x))

    kw = dict(schedule=SCH, prediction="v", solver=solver, steps=5, **options)
    a, ia = diffjax.sample(plain, jax.random.key(3), SHAPE, **kw)
    b, ib = diffjax.sample(lambda x, t, p: plain(x, t), jax.random.key(3), SHAPE, self_condition=True, **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(ia["nfe"]) == int(ib["nfe"])
    # ... and one that uses it gives other samples (the test above can see a difference)
    c, _ = diffjax.sample(net, jax.random.key(3), SHAPE, self_condition=True, **kw)
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_self_condition_works_under_jit():
    fn = jax.jit(lambda k: diffjax.sample(net, k, SHAPE, schedule=SCH, prediction="v", solver="heun", steps=3,
                                          self_condition=True)[0])
    eager = diffjax.sample(net, jax.random.key(4), SHAPE, schedule=SCH, prediction="v", solver="heun", steps=3,
                           self_condition=True)[0]
    np.testing.assert_allclose(np.asarray(fn(jax.random.key(4))), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_bad_input_names_the_argument():
    kw = dict(schedule=SCH, prediction="v", steps=3)
    with pytest.raises(ValueError, match="self_condition must be True or False"):
        diffjax.sample(net, jax.random.key(0), SHAPE, self_condition="yes", **kw)
    with pytest.raises(ValueError, match="self_condition=True needs a fixed-grid solver.*rk45"):
        diffjax.sample(net, jax.random.key(0), SHAPE, schedule=SCH, prediction="v", solver="rk45",
                       self_condition=True)
    # a two-argument model under self_condition=True: the message names model_fn and x0_prev
    with pytest.raises(TypeError, match=r"model_fn failed.*model_fn\(x, t, x0_prev\)"):
        diffjax.sample(lambda x, t: x, jax.random.key(0), SHAPE, self_condition=True, **kw)
    with pytest.raises(ValueError, match="model_fn must return"):
        diffjax.sample(lambda x, t, p: x[:, :2], jax.random.key(0), SHAPE, self_condition=True, **kw)
    with pytest.raises(ValueError, match="needs a current estimate"):
        SelfConditionedDenoiser(net, SCH, "v").cond(True, lambda _: 0, lambda _: 0, None)
