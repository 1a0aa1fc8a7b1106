"""Shared pieces for the training tests: a tiny NNX model, a denoising loss, a resumable
data iterator, and subprocess entry points (run as a script with a chosen device count).

Script usage (from the repository root):
    python tests/training/training_helpers.py restore DIR EXPECTED.npz [--fsdp]
    python tests/training/training_helpers.py sigkill DIR
"""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax import training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIM = 4
OPT_CONFIG = dict(learning_rate=3e-2, total_steps=20, warmup_steps=3, weight_decay=0.01,
                  grad_clip=1.0)


class TinyMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, hidden: int = 32):
        self.l1 = nnx.Linear(DIM, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, DIM, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.gelu(self.l1(x)))


def make_loss(graphdef, rest, *, noisy: bool = True):
    """Denoising loss: predict x from x + 0.5 * noise (noise from the step key)."""

    def loss_fn(params, batch, key):
        model = nnx.merge(graphdef, params, rest)
        x = batch["x"]
        noise = jax.random.normal(key, x.shape) if noisy else jnp.cos(3.0 * x)
        pred = model(x + 0.5 * noise)
        loss = jnp.mean((pred - x) ** 2)
        return loss, {"mse": loss}

    return loss_fn


class ToyData:
    """Deterministic, resumable batches: batch i depends on (seed, i) only."""

    def __init__(self, batch_size: int = 16, seed: int = 0, index: int = 0, poison=()):
        self.batch_size, self.seed, self.index = batch_size, seed, index
        self.poison = tuple(poison)  # indices of batches that get a NaN

    def __iter__(self):
        return self

    def __next__(self):
        x = np.random.RandomState([self.seed, self.index]).randn(self.batch_size, DIM)
        if self.index in self.poison:
            x[0, 0] = np.nan
        self.index += 1
        return {"x": x.astype(np.float32)}

    def get_state(self) -> dict:
        return {"seed": self.seed, "index": self.index, "poison": list(self.poison)}

    @classmethod
    def from_state(cls, state: dict, batch_size: int = 16):
        return cls(batch_size, seed=state["seed"], index=state["index"], poison=state["poison"])


def build(mesh, *, fsdp: bool = False, grad_accum: int = 1, noisy: bool = True,
          hidden: int = 32, seed: int = 0, compiler_options="auto", platform_tweaks="auto"):
    """(train_step, initial params, optimizer) for the tiny model on ``mesh``."""
    graphdef, params, rest = training.split_model(TinyMLP(nnx.Rngs(seed), hidden))
    tx = training.make_optimizer(OPT_CONFIG)
    step = training.make_train_step(
        make_loss(graphdef, rest, noisy=noisy), tx, mesh=mesh, ema_decay=0.99, fsdp=fsdp,
        fsdp_min_size=64, grad_accum=grad_accum,
        learning_rate_fn=training.make_schedule(OPT_CONFIG), compiler_options=compiler_options,
        platform_tweaks=platform_tweaks)
    return step, params, tx


def setup(mesh, *, seed: int = 0, **kwargs):
    """(train_step, initial state placed on ``mesh``)."""
    step, params, tx = build(mesh, seed=seed, **kwargs)
    return step, step.place(training.create_train_state(params, tx, rng=seed + 1))


def abstract_state(mesh, *, seed: int = 0, **kwargs):
    """A restore target built from the current mesh, without allocating a state."""
    step, params, tx = build(mesh, seed=seed, **kwargs)
    shapes = jax.eval_shape(lambda p: training.create_train_state(p, tx, seed + 1), params)
    return step.abstract_state(shapes)


def flat(tree) -> dict:
    return {k: np.asarray(v) for k, v in training.checkpoint.tree_paths(tree).items()}


def run_script(*args, devices: int, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, os.path.abspath(__file__), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


# ---------------------------------------------------------------------- script entry points
def _restore_main(directory: str, expected: str, fsdp: bool) -> None:
    mesh = training.make_mesh()
    target = abstract_state(mesh, fsdp=fsdp)
    restored = training.Checkpointer(directory).restore(target)
    got = flat(restored.state)
    want = dict(np.load(expected))
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # The restored arrays live on this process's mesh with the requested layout.
    kernel = restored.state.params["l1"]["kernel"].get_value()
    assert kernel.sharding.mesh.devices.size == jax.device_count()
    print(f"OK devices={jax.device_count()} step={restored.step} "
          f"spec={kernel.sharding.spec} data={restored.data_state}")


def _sigkill_main(directory: str) -> None:
    big = {"w": jnp.arange(32 * 2**20, dtype=jnp.float32)}  # 128 MiB: the write takes a while
    ckpt = training.Checkpointer(directory, async_save=True, save_interval_steps=1)
    ckpt.save(1, big, {"index": 1})
    ckpt.wait()  # step 1 is committed
    big = {"w": big["w"] + 1.0}
    jax.block_until_ready(big)
    ckpt.save(2, big, {"index": 2})  # returns once copied to host; the write is in flight
    os.kill(os.getpid(), 9)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "restore":
        _restore_main(sys.argv[2], sys.argv[3], "--fsdp" in sys.argv)
    elif cmd == "sigkill":
        _sigkill_main(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {cmd!r}")
