"""The train step: built once, jit-compiled over a device mesh.

``loss_fn(params, batch, key) -> (loss, metrics)`` is a pure function of the trainable
parameters, a batch (any pytree of arrays with a leading batch dimension) and a PRNG key;
it merges the model inside (``nnx.merge(graphdef, params, rest)``). ``loss`` is a float
scalar, ``metrics`` a dict of float scalars (averaged over micro-batches). ``key`` is raw
uint32 key data (usable with every ``jax.random`` function; ``jax.random.wrap_key_data``
turns it into a typed key).

One step:

1. ``key = fold_in(state.rng, state.step)``: the randomness of step ``t`` depends on ``t``
   only, not on the device count or on where a run was resumed;
2. gradients, averaged over ``grad_accum`` micro-batches (`lax.scan`; micro-batch ``j``
   gets ``fold_in(key, j)`` and holds examples ``j, j + A, j + 2A, ...`` of the batch,
   which keeps every micro-batch evenly split over the devices without communication);
3. if the loss and the gradients are finite, the optimizer update and the EMA update are
   applied; otherwise params, optimizer state and EMA are kept and ``skipped`` counts one;
4. ``step`` advances either way.

Metrics: ``loss``, ``grad_norm`` (global norm before clipping), ``learning_rate`` (when a
schedule is given; evaluated at the optimizer's update count), ``finite`` (1.0 or 0.0)
and ``skipped`` (running count), plus the loss function's own metrics.

Backend workarounds come from `diffjax.platform`, behind ``platform_tweaks`` (active on CPU
by default, never on GPU/TPU): the step's XLA compiler options, and loop-friendly
convolution gradients wherever the loss is differentiated inside a loop (gradient
accumulation, `TrainStep.run_steps`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from diffjax import platform
from diffjax.training import sharding as shd
from diffjax.training.optim import ema_decay_at, ema_update
from diffjax.training.state import TrainState

__all__ = ["make_train_step", "TrainStep"]


def __dir__():
    return sorted(__all__)


LossFn = Callable[[Any, Any, jax.Array], "tuple[jax.Array, dict]"]


def _split_micro(x: jax.Array, num: int, mesh: Mesh, axis_name: str) -> jax.Array:
    """(B, ...) -> (num, B // num, ...), micro-batch j = rows j, j + num, ... (strided)."""
    b = x.shape[0]
    x = x.reshape((b // num, num) + x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, axis_name)))


class TrainStep:
    """A compiled train step ``(state, batch) -> (state, metrics)``; see `make_train_step`."""

    def __init__(self, loss_fn: LossFn, optimizer: optax.GradientTransformation, *, mesh: Mesh,
                 ema_decay: float, ema_warmup: bool = True, grad_accum: int = 1,
                 fsdp: bool = False, fsdp_min_size: int = 2**18,
                 learning_rate_fn: Optional[optax.Schedule] = None, donate: bool = True,
                 axis_name: str = shd.DATA_AXIS,
                 compiler_options: Union[str, Mapping[str, Any], None] = "auto",
                 platform_tweaks: Union[str, bool] = "auto"):
        if not isinstance(grad_accum, (int, np.integer)) or grad_accum < 1:
            raise ValueError(f"grad_accum must be an int >= 1, got {grad_accum!r}")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay!r}")
        if axis_name not in mesh.shape:
            raise ValueError(f"axis_name {axis_name!r} is not a mesh axis; mesh axes: "
                             f"{tuple(mesh.shape)}")
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.mesh = mesh
        self.ema_decay = float(ema_decay)
        self.ema_warmup = ema_warmup
        self.grad_accum = int(grad_accum)
        self.fsdp = fsdp
        self.fsdp_min_size = fsdp_min_size
        self.learning_rate_fn = learning_rate_fn
        self.donate = donate
        self.axis_name = axis_name
        devices = list(mesh.devices.flat)
        self.platform_tweaks = platform.active(platform_tweaks, devices)
        self.compiler_options = platform.resolve_compiler_options(compiler_options, devices,
                                                                  self.platform_tweaks)
        # The loss as differentiated inside a loop (accumulation, run_steps).
        self._loop_loss_fn = (platform.loop_friendly_convolutions(loss_fn)
                              if self.platform_tweaks else loss_fn)
        self._jitted = {}

    # ------------------------------------------------------------------ shardings
    def state_shardings(self, state: Any) -> Any:
        """NamedShardings for a train state (arrays or ShapeDtypeStructs)."""
        return shd.state_shardings(state, self.mesh, fsdp=self.fsdp,
                                   fsdp_min_size=self.fsdp_min_size, axis_name=self.axis_name)

    def place(self, state: TrainState) -> TrainState:
        """A copy of ``state`` on the mesh with the step's layout.

        Always copies, so donating the placed state never deletes the caller's arrays.
        """
        return jax.device_put(state, self.state_shardings(state), may_alias=False)

    def abstract_state(self, state: Any) -> Any:
        """ShapeDtypeStructs with this mesh's shardings: a restore target for checkpoints.

        ``state`` may be concrete or the output of ``jax.eval_shape(init_fn)``.
        """
        abstract = jax.eval_shape(lambda s: s, state)
        return shd.with_shardings(abstract, self.state_shardings(abstract))

    def batch_shardings(self, batch: Any) -> Any:
        return jax.tree.map(
            lambda x: shd.batch_sharding(self.mesh, np.ndim(x), axis_name=self.axis_name), batch)

    # ------------------------------------------------------------------ the step
    def _like_params(self, tree):
        """``tree`` (gradients) laid out as the parameters: with FSDP the cross-device sum
        of the gradients then lands directly in shards (a reduce-scatter), not in a full
        all-reduced copy per device that is sliced afterwards."""
        return jax.lax.with_sharding_constraint(tree, self.state_shardings(tree))

    def _gathered(self, params):
        """With FSDP: ``params`` gathered over the ``data`` axis (kept split over ``model``)
        for the forward and backward pass, so that each device computes on its own
        examples; without FSDP ``params`` as they are."""
        if not self.fsdp:
            return params
        return jax.lax.with_sharding_constraint(
            params, shd.state_shardings(params, self.mesh, fsdp=False,
                                        axis_name=self.axis_name))

    def _grads(self, params, batch, key, in_loop: bool = False):
        num = self.grad_accum
        loss_fn = self._loop_loss_fn if (in_loop or num > 1) else self.loss_fn
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        params = self._gathered(params)
        if num == 1:
            (loss, metrics), grads = grad_fn(params, batch, key)
            return loss, metrics, self._like_params(grads)
        for x in jax.tree.leaves(batch):
            if np.ndim(x) and x.shape[0] % num:
                raise ValueError(f"batch size {x.shape[0]} must be divisible by "
                                 f"grad_accum={num}")
        micro = jax.tree.map(
            lambda x: _split_micro(x, num, self.mesh, self.axis_name) if np.ndim(x) else
            jnp.broadcast_to(x, (num,)), batch)

        def body(acc, inputs):
            j, mb = inputs
            (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(key, j))
            grads = self._like_params(grads)
            acc = jax.tree.map(lambda a, g: a + g.astype(a.dtype), acc, grads)
            return acc, (loss, metrics)

        zeros = self._like_params(jax.tree.map(jnp.zeros_like, params))
        grads, (losses, metrics) = jax.lax.scan(body, zeros, (jnp.arange(num), micro))
        grads = jax.tree.map(lambda g: g / num, grads)
        return jnp.mean(losses), jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics), grads

    def _step(self, state: TrainState, batch: Any, in_loop: bool = False):
        key = jax.random.fold_in(state.rng, state.step)
        loss, metrics, grads = self._grads(state.params, batch, key, in_loop)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = ema_decay_at(state.step, self.ema_decay, self.ema_warmup)
        ema = ema_update(state.ema_params, params, decay)

        def keep_if_finite(new, old):
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        skipped = state.skipped + jnp.where(finite, 0, 1).astype(state.skipped.dtype)
        new_state = state.replace(
            step=state.step + 1,
            params=keep_if_finite(params, state.params),
            opt_state=keep_if_finite(opt_state, state.opt_state),
            ema_params=keep_if_finite(ema, state.ema_params),
            skipped=skipped,
        )
        out = {k: jnp.asarray(v, jnp.float32) for k, v in dict(metrics).items()}
        out.update(loss=loss.astype(jnp.float32), grad_norm=grad_norm.astype(jnp.float32),
                   finite=finite.astype(jnp.float32), skipped=skipped.astype(jnp.float32))
        if self.learning_rate_fn is not None:
            # The optimizer has applied (step - skipped) updates before this one.
            out["learning_rate"] = jnp.asarray(
                self.learning_rate_fn(state.step - state.skipped), jnp.float32)
        return new_state, out

    def _steps(self, state: TrainState, batches: tuple):
        """`_step` over the batches in turn, in one `lax.scan`."""
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
        return jax.lax.scan(lambda s, b: self._step(s, b, in_loop=True), state, stacked)

    def jitted(self, state: Any, batch: Any, *, multi: bool = False):
        """The `jax.jit`-wrapped step for this state/batch structure (built once); with
        ``multi``, the `run_steps` function for a tuple of batches."""
        cache_key = (multi, jax.tree.structure(state), jax.tree.structure(batch),
                     tuple(np.ndim(x) for x in jax.tree.leaves(batch)))
        fn = self._jitted.get(cache_key)
        if fn is None:
            state_sh = self.state_shardings(jax.eval_shape(lambda s: s, state))
            fn = jax.jit(self._steps if multi else self._step,
                         in_shardings=(state_sh, self.batch_shardings(batch)),
                         out_shardings=(state_sh, shd.replicated(self.mesh)),
                         donate_argnums=(0,) if self.donate else (),
                         compiler_options=self.compiler_options)
            self._jitted[cache_key] = fn
        return fn

    def lower(self, state: Any, batch: Any):
        """``jax.jit(...).lower`` for compile-time and memory analysis (benchmarks)."""
        return self.jitted(state, batch).lower(state, batch)

    def __call__(self, state: TrainState, batch: Any):
        """One step. Host (numpy) batches are sharded with `shard_batch` first: pass this
        process's examples only. With donation the input state's buffers are consumed."""
        batch = shd.shard_batch(batch, self.mesh, axis_name=self.axis_name)
        return self.jitted(state, batch)(state, batch)

    def run_steps(self, state: TrainState, batches: Sequence[Any]):
        """``len(batches)`` steps in one compiled call: the same result as calling the step
        on each batch in turn, with one dispatch and one allocation of the step's
        temporaries per call instead of per step (on CPU that allocation, the kernel
        zeroing fresh pages, is a noticeable share of a U-Net step; ``bench/train.py
        --steps-per-call`` measures it). Returns the final state and the metrics of every step, stacked along a
        leading axis."""
        if not batches:
            raise ValueError("run_steps needs at least one batch; got none")
        batches = tuple(shd.shard_batch(b, self.mesh, axis_name=self.axis_name)
                        for b in batches)
        return self.jitted(state, batches, multi=True)(state, batches)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, mesh: Mesh,
                    ema_decay: float = 0.9999, ema_warmup: bool = True, grad_accum: int = 1,
                    fsdp: bool = False, fsdp_min_size: int = 2**18,
                    learning_rate_fn: Optional[optax.Schedule] = None, donate: bool = True,
                    axis_name: str = shd.DATA_AXIS,
                    compiler_options: Union[str, Mapping[str, Any], None] = "auto",
                    platform_tweaks: Union[str, bool] = "auto") -> TrainStep:
    """Build the train step (see the module docstring).

    Args:
      loss_fn: ``(params, batch, key) -> (loss, metrics)``, pure.
      optimizer: an optax transformation over ``params`` (e.g. `make_optimizer`).
      mesh: device mesh with a ``axis_name`` axis; the batch is split over it. A ``model``
        axis, if present, splits the parameters their ``logical_axes`` metadata names
        (`diffjax.training.sharding.LOGICAL_RULES`).
      ema_decay: EMA decay; with ``ema_warmup`` the decay at step t is
        ``min(ema_decay, (1 + t) / (10 + t))``.
      grad_accum: number of micro-batches per step (the batch size must be divisible).
      fsdp: shard state arrays of at least ``fsdp_min_size`` elements along the data axis
        on their largest divisible dimension; inside the step the parameters are gathered
        for the forward and backward pass and the gradients reduce-scattered into shards.
      learning_rate_fn: the optimizer's schedule, only for the ``learning_rate`` metric.
      donate: donate the input state's buffers (do not reuse a state after passing it in).
      compiler_options: XLA options for the step's compilation. ``"auto"``:
        `diffjax.platform.compiler_options` for the mesh's devices when the platform tweaks
        are active (on CPU: convolutions through XLA's Eigen kernels instead of YNNPACK);
        ``None``: XLA's defaults; a mapping: exactly these options.
      platform_tweaks: the switch of `diffjax.platform`'s workarounds: ``"auto"`` (active
        when every device of the mesh is a CPU), ``True`` or ``False``.
    """
    return TrainStep(loss_fn, optimizer, mesh=mesh, ema_decay=ema_decay, ema_warmup=ema_warmup,
                     grad_accum=grad_accum, fsdp=fsdp, fsdp_min_size=fsdp_min_size,
                     learning_rate_fn=learning_rate_fn, donate=donate, axis_name=axis_name,
                     compiler_options=compiler_options, platform_tweaks=platform_tweaks)
