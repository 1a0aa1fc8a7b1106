"""Sampling a product process: every modality advanced over one shared time grid, or some of
them clamped.

``sample(model_fn, key, shapes, process=product(...), ...)`` runs one ``lax.scan`` over the grid
``[1, ..., t_min]``. At each step the joint model is called once on the whole state,
``model_fn(xs, ts)`` (the conventions of ``diffjax.joint.processes``), and each generated part
takes its own sampler's step from that output:

* a Gaussian part: the step of the named solver of ``diffjax.solvers`` (a fixed-grid one;
  the model seen through ``diffjax.solvers.Denoiser``). A solver that needs further model
  calls inside a step (``heun``, ``pc``) gets them from the joint model with the other parts
  held at their state at the start of the step.
* a discrete part: the ancestral step of ``diffjax.discrete.sample`` (``method="ancestral"``,
  the exact reverse process given the model: each masked token revealed with probability
  ``(alpha_s - alpha_t) / (1 - alpha_t)``), with ``temperature`` and ``top_p`` on its logits.

After the grid a last model call at ``t_min`` gives the result: a Gaussian part's x0 estimate
(as ``diffjax.sample`` with ``denoise_final=True``), and for a discrete part a draw from
``p(x0 | state)`` at every position still to generate (with ``temperature = 0``: the argmax).

Clamping (``clamp[i] = True``): part i stays exactly ``x_init[i]`` throughout and is fed to the
model at time 0 (clean). Clamping the image and generating the label classifies by diffusion;
clamping the label generates from that class.

Classifier-free guidance (``guidance_scale`` w != 1) conditions on the masked parts (the
label): the unconditional branch replaces every token of every masked part by the mask (a
clamped part at time 1, what the model sees when the part is unknown; a generated one at its
grid time, so that a token not revealed yet gives both branches the same input). Gaussian parts
get ``uncond + w (cond - uncond)``, uniform-process parts ``diffjax.discrete.guide_logits``; the
masked parts themselves are not guided. Clamping the label guides towards that class; in joint
sampling the image is guided towards the label once it is revealed. Clamped parts must be
masked processes. Both branches run in one batched call.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffjax.discrete.draws import adjust_log_probs, categorical
from diffjax.discrete.guidance import guide_logits
from diffjax.discrete.processes import MaskedProcess
from diffjax.discrete.sampling import SAMPLERS as DISCRETE_SAMPLERS
from diffjax.discrete.sampling import _setup as _discrete_setup
from diffjax.joint.processes import ProductProcess
from diffjax.solvers import driver
from diffjax.solvers._base import Denoiser, concrete_float

__all__ = ["sample"]


def __dir__():
    return sorted(__all__)


class _StepDenoiser(Denoiser):
    """A ``Denoiser`` that already holds the joint model's output at the start of the step:
    called at exactly that state and time it uses it, anywhere else it calls the model."""

    def __init__(self, model_fn, schedule, prediction, x, t, out):
        super().__init__(model_fn, schedule, prediction)
        self._at, self._out = (x, t), out

    def __call__(self, x, t):
        if x is self._at[0] and t is self._at[1]:
            return Denoiser(lambda *_: self._out, self.schedule, self.prediction)(x, t)
        return super().__call__(x, t)


def _check_number(name, value, ok, allowed):
    v = concrete_float(value)
    if v is not None and not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be a finite number {allowed}, got {v!r}")


def _out_shapes(process, shapes):
    """The output shapes part i's model output may have."""
    out = []
    for i, (p, shape) in enumerate(zip(process.parts, shapes)):
        if process.is_gaussian(i):
            out.append([shape])
        else:
            V = p.vocab_size
            out.append([shape + (V,)] + ([shape + (V + 1,)] if isinstance(p, MaskedProcess) else []))
    return out


def _condition_parts(process):
    """The parts classifier-free guidance conditions on: the masked processes (random order)."""
    return {i for i, p in enumerate(process.parts)
            if isinstance(p, MaskedProcess) and not getattr(p, "fixed_order", False)}


def _joint_caller(model_fn, process, shapes, clamp, guided, guidance_scale):
    """``call(states, t) -> outs``: the joint model at ``states`` with the generated parts at
    time t (a scalar or (B,)) and the clamped ones at 0, guided where asked; outputs checked."""
    B = shapes[0][0]
    allowed = _out_shapes(process, shapes)

    def raw(xs, ts):
        out = model_fn(xs, ts)
        if not isinstance(out, (tuple, list)) or len(out) != process.num_parts:
            raise ValueError(f"model_fn(xs, ts) must return a tuple with one output per part "
                             f"({process.num_parts}), got {type(out).__name__}")
        return tuple(out)

    def check(out, batch):
        for i, (o, ok) in enumerate(zip(out, allowed)):
            ok = [(batch,) + s[1:] for s in ok]
            if not hasattr(o, "shape") or tuple(o.shape) not in ok:
                got = tuple(o.shape) if hasattr(o, "shape") else type(o).__name__
                raise ValueError(f"model_fn's output {i} must have shape {' or '.join(map(str, ok))}, got {got}")
            if not jnp.issubdtype(o.dtype, jnp.floating):
                raise TypeError(f"model_fn's output {i} must be floating-point, got dtype {o.dtype}")
        return out

    conditions = _condition_parts(process)

    def call(states, t, tdtype):
        tb = jnp.broadcast_to(jnp.asarray(t, tdtype), (B,))
        zeros, ones = jnp.zeros((B,), tdtype), jnp.ones((B,), tdtype)
        times = tuple(zeros if c else tb for c in clamp)
        if not guided:
            return check(raw(tuple(states), times), B)
        unc_states = tuple(jnp.full_like(x, p.mask_id) if i in conditions else x
                           for i, (p, x) in enumerate(zip(process.parts, states)))
        unc_times = tuple(ones if (clamp[i] and i in conditions) else times[i] for i in range(len(clamp)))
        both = check(raw(tuple(jnp.concatenate([a, b]) for a, b in zip(states, unc_states)),
                         tuple(jnp.concatenate([a, b]) for a, b in zip(times, unc_times))), 2 * B)
        outs = []
        for i, o in enumerate(both):
            c, u = o[:B], o[B:]
            if clamp[i] or i in conditions:
                outs.append(c)
            elif process.is_gaussian(i):
                w = jnp.asarray(guidance_scale, c.dtype)
                outs.append(u + w * (c - u))
            else:
                outs.append(guide_logits(c, u, guidance_scale))
        return tuple(outs)

    return call


def sample(model_fn, key, shapes, *, process, solver="ddpm", steps=None, x_init=None, clamp=None,
           t_min=1e-3, grid=None, guidance_scale=1.0, temperature=1.0, top_p=None, **solver_options):
    """Draws states of ``process`` (a :class:`diffjax.joint.ProductProcess`) from a joint model.

    See the module docstring for the scheme.

    Args:
      model_fn: ``model_fn(xs, ts) -> outs``, tuples with one entry per part: ``xs[i]`` of
        ``shapes[i]``, ``ts[i]`` of shape (B,); ``outs[i]`` a Gaussian part's prediction (the
        shape of ``xs[i]``) or a discrete part's logits (``shapes[i] + (vocab_size,)``, or
        ``vocab_size + 1`` for a masked part). A wrong output raises a ValueError naming
        ``model_fn``'s output.
      key: a ``jax.random`` key.
      shapes: one shape ``(B, ...)`` per part, the same B.
      process: the ``ProductProcess``.
      solver: the ``diffjax.solvers`` name for the Gaussian parts (a fixed-grid solver;
        default ``"ddpm"``, ancestral sampling).
      steps: grid intervals, an int >= 1; default: the solver's own count.
      x_init: None, or a tuple with one entry per part: None (start from the prior), a Gaussian
        part's starting state (float, at t = 1), a discrete part's tokens in ``0 .. vocab_size``
        (``vocab_size``, the mask id, marks a position to generate; any other token is kept).
      clamp: None, or a tuple of bools (static): clamped parts stay ``x_init[i]`` and are fed at
        time 0. At least one part must be generated.
      t_min: the end of the grid, > 0.
      grid: a ``diffjax.grids`` name; default: the solver's (on the first Gaussian part's
        schedule; ``uniform_t`` when there is no Gaussian part).
      guidance_scale: classifier-free guidance weight (1: none; may be traced) towards the masked
        parts (module docstring); clamped parts must then be masked processes.
      temperature, top_p: for the discrete parts' draws (>= 0, 0 = argmax; None or (0, 1]).
      **solver_options: the solver's options (e.g. ``eta`` for ddim).

    Returns:
      ``(xs, info)``: the tuple of states at t = 0 and ``info`` with ``ts`` (the grid) and
      ``nfe`` (joint model calls; a guided call counts once).
    """
    if not isinstance(process, ProductProcess):
        raise ValueError(f"process must be a diffjax.joint.ProductProcess (diffjax.joint.product(...)), "
                         f"got {type(process).__name__}")
    n = process.num_parts
    shapes = tuple(tuple(int(d) for d in s) for s in process.split(shapes, "shapes"))
    if any(len(s) < 1 for s in shapes) or len({s[0] for s in shapes}) != 1 or shapes[0][0] < 1:
        raise ValueError(f"shapes must be (B, ...) with the same B >= 1 for every part, got {shapes}")
    x_init = (None,) * n if x_init is None else process.split(x_init, "x_init")
    clamp = (False,) * n if clamp is None else tuple(process.split(clamp, "clamp"))
    if not all(isinstance(c, bool) for c in clamp):
        raise ValueError(f"clamp must hold Python bools (static), got {clamp!r}")
    if all(clamp):
        raise ValueError("clamp: every part is clamped, there is nothing to sample")
    for i, c in enumerate(clamp):
        if c and x_init[i] is None:
            raise ValueError(f"clamp[{i}] is True but x_init[{i}] is None: a clamped part needs its value")
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable as model_fn(xs, ts) -> outs, got {type(model_fn).__name__}")
    _check_number("temperature", temperature, lambda v: v >= 0.0, ">= 0 (0 = argmax)")
    if top_p is not None:
        _check_number("top_p", top_p, lambda v: 0.0 < v <= 1.0, "in (0, 1] (or None)")
    scale = concrete_float(guidance_scale)
    guided = scale is None or scale != 1.0
    if guided:
        _check_number("guidance_scale", guidance_scale, lambda v: True, "")
        conditions = _condition_parts(process)
        bad = [i for i, c in enumerate(clamp) if c and i not in conditions]
        if not conditions or bad:
            raise ValueError(f"guidance_scale={guidance_scale} needs a masked part to condition on and every "
                             f"clamped part masked (the unconditional branch masks them); clamp={clamp}")
    lo = concrete_float(t_min)
    if lo is None or not 0.0 < lo < 1.0:
        raise ValueError(f"t_min must be a number in (0, 1), got {t_min!r}")

    solv = driver.make_solver(solver, solver_options)
    if not solv.fixed_grid:
        raise ValueError(f"solver must be a fixed-grid solver (one step per grid interval), got {solver!r}")
    gauss = [i for i in range(n) if process.is_gaussian(i)]
    for i in gauss:
        driver.check_common(process.parts[i].schedule, process.parts[i].prediction, solver, t_min, 1.0)
    gen_gauss = [i for i in gauss if not clamp[i]]
    ref = (gen_gauss or gauss or [None])[0]
    tdtype = jnp.float32
    if ref is None:
        if steps is None:
            raise ValueError("steps is required when the process has no Gaussian part")
        ts = jnp.linspace(1.0, lo, steps + 1, dtype=tdtype)
    else:
        ts = driver.make_grid(solv, process.parts[ref].schedule, steps=steps, ts=None, t_min=lo, t_max=1.0,
                              grid=grid, dtype=tdtype)
    for i in gen_gauss:
        driver.check_singular_start(process.parts[i].schedule, process.parts[i].prediction, ts[0])
    num_steps = ts.shape[0] - 1
    B = shapes[0][0]

    k_init, k_run, k_final = jax.random.split(key, 3)
    init_keys = jax.random.split(k_init, n)
    states, fixed = [], []
    for i, (p, shape, x0, c) in enumerate(zip(process.parts, shapes, x_init, clamp)):
        if process.is_gaussian(i):
            if x0 is not None:
                x0 = driver.check_state(x0, f"x_init[{i}]", shape)
            else:
                x0 = p.sigma(ts[0]) * jax.random.normal(init_keys[i], shape, jnp.float32)
            states.append(x0)
            fixed.append(None)
        else:
            x, fix, _ = _discrete_setup(p, init_keys[i], shape, x0, None)
            states.append(x)
            fixed.append(jnp.ones(shape, bool) if c else fix)

    call = _joint_caller(model_fn, process, shapes, clamp, guided, guidance_scale)
    ancestral = DISCRETE_SAMPLERS.get("ancestral")

    def part_fn(states, i):
        """Part i's model with the other parts held at ``states``."""
        def fn(x, t):
            xs = list(states)
            xs[i] = x
            return call(xs, t, jnp.promote_types(jnp.asarray(t).dtype, jnp.float32))[i]
        return fn

    def token_denoiser(i, states, outs, t):
        p, shape = process.parts[i], shapes[i]
        fn = part_fn(states, i)
        x_cur = states[i].reshape(B, -1)

        def den(x, tt):
            full = x.reshape(shape)
            logits = outs[i] if (x is x_cur and tt is t) else fn(full, tt)
            logp = p.x0_log_probs(logits, full).reshape(B, -1, p.vocab_size)
            return logp, adjust_log_probs(logp, temperature, top_p)
        return den, x_cur

    gcarry0 = tuple(solv.init(Denoiser(part_fn(states, i), process.parts[i].schedule, process.parts[i].prediction),
                              states[i]) if i in gen_gauss else None for i in range(n))
    tokens0 = tuple(states[i] if i not in gauss else None for i in range(n))

    def current(gcarry, tokens):
        return [solv.state(gcarry[i]) if i in gen_gauss else (states[i] if i in gauss else tokens[i])
                for i in range(n)]

    def body(carry, inp):
        gcarry, tokens, nfe = carry
        t, t_next, key, last = inp
        cur = current(gcarry, tokens)
        outs = call(cur, t, tdtype)
        keys = jax.random.split(key, n)
        new_g, new_tok, used_total = list(gcarry), list(tokens), nfe + 1
        for i in range(n):
            if clamp[i]:
                continue
            p = process.parts[i]
            if process.is_gaussian(i):
                den = _StepDenoiser(part_fn(cur, i), p.schedule, p.prediction, cur[i], t, outs[i])
                new_g[i], used = solv.step(den, gcarry[i], t, t_next, keys[i], last)
                used_total = used_total + used - 1
            else:
                den, x_flat = token_denoiser(i, cur, outs, t)
                fix = fixed[i].reshape(B, -1)
                step = ancestral.build_step(p, den, x_flat, fix, ts, None)
                new_tok[i] = jnp.where(fix, x_flat, step(x_flat, t, t_next, keys[i])).reshape(shapes[i])
        return (tuple(new_g), tuple(new_tok), used_total), None

    n_ = num_steps
    inputs = (ts[:-1], ts[1:], jax.random.split(k_run, n_), jnp.arange(n_) == n_ - 1)
    (gcarry, tokens, nfe), _ = jax.lax.scan(body, (gcarry0, tokens0, jnp.zeros((), jnp.int32)), inputs)

    cur = current(gcarry, tokens)
    t_end = ts[-1]
    outs = call(cur, t_end, tdtype)
    final_keys = jax.random.split(k_final, n)
    result = []
    for i, p in enumerate(process.parts):
        if clamp[i]:
            result.append(cur[i])
        elif process.is_gaussian(i):
            den = _StepDenoiser(part_fn(cur, i), p.schedule, p.prediction, cur[i], t_end, outs[i])
            result.append(den(cur[i], t_end)[0])
        else:
            logp = p.x0_log_probs(outs[i], cur[i])
            draw = categorical(final_keys[i], adjust_log_probs(logp, temperature, top_p)).astype(cur[i].dtype)
            todo = ~fixed[i] & ((cur[i] == p.mask_id) if isinstance(p, MaskedProcess) else True)
            result.append(jnp.where(todo, draw, cur[i]))
    return tuple(result), {"ts": ts, "nfe": nfe + 1}
