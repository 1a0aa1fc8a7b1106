"""Compiling for a TPU slice without TPUs (`diffjax.training.aot`) and the data x model mesh.

The TPU tests run the real XLA:TPU compiler on this CPU host for the abstract chips of a
``v5e:2x2`` slice; they need libtpu (``pip install -e '.[tpu]'``, part of ``.[dev]``) and are
skipped with the reason where it cannot be installed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import diffjax
from diffjax import discrete, models, schedules, training
from diffjax.training import aot
from diffjax.training import sharding as shd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPOLOGY = "v5e:2x2"
BATCH = 40  # a global batch no parameter dimension equals (to spot a gathered batch)


@pytest.fixture(scope="module")
def tpu_devices():
    try:
        return aot.topology_devices(TOPOLOGY)
    except RuntimeError as e:
        pytest.skip(f"no TPU compiler on this machine: {e}")


def _gaussian_step(model, mesh, x_shape, *, fsdp=False, fsdp_min_size=2**10, grad_accum=1):
    objective, params = training.make_objective(
        model, schedule=schedules.get("cosine"), prediction="v")
    optimizer = training.make_optimizer(dict(learning_rate=1e-3, total_steps=10, grad_clip=1.0))
    step = training.make_train_step(objective.loss_fn, optimizer, mesh=mesh, fsdp=fsdp,
                                    fsdp_min_size=fsdp_min_size, grad_accum=grad_accum)
    shapes = jax.eval_shape(lambda p: training.create_train_state(p, optimizer, rng=0), params)
    state = step.abstract_state(shapes)
    batch = {"x": jax.ShapeDtypeStruct((BATCH,) + x_shape, jnp.float32,
                                       sharding=shd.batch_sharding(mesh, 1 + len(x_shape)))}
    return step, state, batch, params


def _compile_step(model, devices, x_shape, **kw):
    mesh = training.make_mesh(devices=devices)
    step, state, batch, params = _gaussian_step(model, mesh, x_shape, **kw)
    report = aot.compile_and_analyze(step.jitted(state, batch), state, batch,
                                     chip=aot.chip_for(TOPOLOGY), chips=4)
    return report, params


def _mlp(hidden=64):
    return models.MLP(6, hidden=hidden, depth=2, time_embed_dim=32, rngs=nnx.Rngs(0))


def _unet():
    return models.UNet(3, image_size=8, ch=8, ch_mult=(1, 2), num_res_blocks=1,
                       attn_resolutions=(), rngs=nnx.Rngs(0))  # attention: middle block


def _dit(dtype=jnp.float32):
    return models.PatchTransformer(3, image_size=8, patch_size=2, dim=32, depth=1, heads=4,
                                   dtype=dtype, rngs=nnx.Rngs(0))


def _check_compiled(report):
    assert report.fits and report.error == ""
    assert report.estimate_source in ("xla_cycles", "roofline")
    assert report.roofline_seconds > 0 and 0 < report.est_mfu <= 1  # est >= flops / peak
    # MFU as defined: the whole step's flops over (time x chips x the chip's bf16 peak).
    assert report.est_mfu == pytest.approx(
        report.flops_per_step / (report.est_step_seconds * report.chips * 197e12), rel=1e-9)
    assert 0 < report.hbm_per_chip_bytes < report.hbm_capacity_bytes == 16 * 2**30
    # No 64-bit types anywhere in the compiled program.
    assert not aot.hlo_dtypes(report.hlo) & {"f64", "s64", "u64", "c128"}


@pytest.mark.parametrize("name, build, x_shape", [
    ("mlp", _mlp, (6,)),
    ("unet", _unet, (8, 8, 3)),
    ("transformer", lambda: _dit(jnp.bfloat16), (8, 8, 3)),
])
def test_train_step_compiles_for_tpu(tpu_devices, name, build, x_shape):
    report, params = _compile_step(build(), tpu_devices, x_shape)
    _check_compiled(report)
    assert report.estimate_source == "xla_cycles"  # the TPU compiler's own cycle counts
    # Replicated parameters: gradients are all-reduced over the batch shards, nothing is
    # gathered.
    assert report.collectives.get("all-reduce", 0) >= 1
    assert "all-gather" not in report.collectives
    if name == "mlp":
        # Forward + backward of the dense layers: at least 6 flops per weight and example
        # (the program's count covers every chip's quarter of the batch).
        dense = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params) if p.ndim == 2)
        assert report.flops_per_step >= 6 * dense * BATCH


def test_fsdp_shards_state_and_reduce_scatters_gradients(tpu_devices):
    mesh = training.make_mesh(devices=tpu_devices)
    args = {}
    for fsdp in (False, True):
        # Wide enough that the shards fill TPU tiles (8 x 128): padding would hide the saving.
        step, state, batch, params = _gaussian_step(_mlp(512), mesh, (6,), fsdp=fsdp,
                                                    fsdp_min_size=2**14)
        compiled = step.jitted(state, batch).lower(state, batch).compile()
        args[fsdp] = compiled.memory_analysis().argument_size_in_bytes
        hlo = compiled.as_text()
        colls = aot.count_collectives(hlo)
        if fsdp:
            # Gradients are summed straight into shards; parameters are gathered for the
            # forward pass, the batch never is.
            assert colls.get("reduce-scatter", 0) >= 1, colls
            gathered = _gathered_shapes(hlo)
            assert gathered
            assert not [g for g in gathered if re.match(rf"\w+\[{BATCH}[,\]]", g)], gathered
        else:
            assert colls.get("all-reduce", 0) >= 1 and "reduce-scatter" not in colls, colls
    assert args[True] <= args[False] / 3, args


def _gathered_shapes(hlo):
    return re.findall(r"= \(?(\w+\[[\d,]*\])[^=]*? all-gather(?:-start)?\(", hlo)


def test_fsdp_transformer_gathers_parameters_not_the_batch(tpu_devices):
    """On a DiT, left to itself XLA would gather the activations of the whole batch instead of
    the parameters (the step gathers the parameters explicitly)."""
    mesh = training.make_mesh(devices=tpu_devices)
    model = models.PatchTransformer(3, image_size=8, patch_size=2, dim=256, depth=1, heads=4,
                                    rngs=nnx.Rngs(0))
    step, state, batch, _ = _gaussian_step(model, mesh, (8, 8, 3), fsdp=True,
                                           fsdp_min_size=2**14)
    hlo = step.jitted(state, batch).lower(state, batch).compile().as_text()
    gathered = _gathered_shapes(hlo)
    assert gathered and "reduce-scatter" in aot.count_collectives(hlo)
    assert not [g for g in gathered if re.match(rf"\w+\[{BATCH}[,\]]", g)], gathered


def test_sampler_estimate_counts_every_step(tpu_devices):
    """The cycle estimate of ``diffjax.sample`` grows with the number of solver steps (the
    scan's body is counted once per iteration)."""
    mesh = training.make_mesh(devices=tpu_devices)
    model = _mlp()
    graphdef, params, rest = training.split_model(model)
    chip = aot.chip_for(TOPOLOGY)

    def report(steps):
        def fn(params, key):
            def model_fn(x, t):
                return nnx.merge(graphdef, params, rest)(x, t)
            x, _ = diffjax.sample(model_fn, key, (BATCH, 6), schedule=schedules.get("cosine"),
                                  prediction="v", solver="dpmpp_2m", steps=steps)
            return x
        jitted = jax.jit(fn, in_shardings=(shd.replicated(mesh), shd.replicated(mesh)),
                         out_shardings=shd.batch_sharding(mesh, 2))
        abstract = jax.eval_shape(lambda: params)
        key = jax.eval_shape(lambda: jax.random.key(0))
        return aot.compile_and_analyze(jitted, abstract, key, chip=chip, chips=4)

    few, many = report(4), report(16)
    for r in (few, many):
        _check_compiled(r)
        assert r.estimate_source == "xla_cycles"
    ratio = many.est_step_seconds / few.est_step_seconds
    assert 2.5 < ratio < 4.5, ratio  # 16 vs 4 model calls, plus a fixed part


def test_program_too_large_for_hbm_is_reported_not_raised(tpu_devices):
    mesh = training.make_mesh(devices=tpu_devices[:1])
    big = jax.ShapeDtypeStruct((6 * 2**30,), jnp.float32,  # 24 GiB on a 16 GiB chip
                               sharding=shd.replicated(mesh))
    report = aot.compile_and_analyze(jax.jit(lambda v: v * 2.0 + 1.0), big,
                                     chip=aot.chip_for(TOPOLOGY), chips=1)
    assert report.fits is False
    assert report.hbm_per_chip_bytes is None or report.hbm_per_chip_bytes > 16 * 2**30


def test_hlo_cycles_multiplies_loop_bodies_by_their_trip_count():
    hlo = """HloModule m

%body (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %f = f32[4] fusion(%x), kind=kLoop, calls=%fc, backend_config={"estimated_cycles":"100"}
}

%cond (p: (s32[], f32[4])) -> pred[] {
  %n = s32[] constant(7)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

%known (p: (s32[], f32[4])) -> (s32[], f32[4]) {
  %g = f32[4] fusion(%x), kind=kLoop, calls=%fc, backend_config={"estimated_cycles":"10"}
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a1 = f32[4] fusion(%a), kind=kLoop, calls=%fc, backend_config={"estimated_cycles":"5"}
  %w = (s32[], f32[4]) while(%t), condition=%cond, body=%body
  %w2 = (s32[], f32[4]) while(%t), condition=%cond, body=%known, backend_config={"known_trip_count":{"n":"3"}}
  %ar = f32[4] all-reduce(%a1), replica_groups={}, to_apply=%add
  %ag = (f32[4], f32[8]) all-gather-start(%a1), dimensions={0}
  %agd = f32[8] all-gather-done(%ag)
}
"""
    assert aot.hlo_cycles(hlo) == 5 + 7 * 100 + 3 * 10
    assert aot.count_collectives(hlo) == {"all-gather": 1, "all-reduce": 1}


def test_chip_table_and_clock():
    v5e = aot.chip_for("v5e:4x4")
    assert v5e.peak_flops == 197e12 and v5e.hbm_bytes == 16 * 2**30
    assert v5e.clock_hz == pytest.approx(1.503e9, rel=1e-3)  # 4 MXUs x 128^2 x 2 flops
    assert aot.chip_for("v5p:2x2x4").clock_hz == pytest.approx(1.75e9, rel=1e-2)
    with pytest.raises(ValueError, match="unknown chip 'v9x:2x2'"):
        aot.chip_for("v9x:2x2")


# ---------------------------------------------------------------------------- data x model
def _token_model():
    return models.TokenTransformer(11, seq_len=8, dim=32, depth=1, heads=4, cond_dim=16,
                                   rngs=nnx.Rngs(1))


def _one_step(mesh, *, fsdp=False):
    objective, params = training.make_discrete_objective(
        _token_model(), process=discrete.masked(11))
    optimizer = optax.adamw(1e-2)
    step = training.make_train_step(objective.loss_fn, optimizer, mesh=mesh, fsdp=fsdp,
                                    fsdp_min_size=64, ema_decay=0.9)
    state = step.place(training.create_train_state(params, optimizer, rng=3))
    tokens = np.asarray(jax.random.randint(jax.random.key(5), (8, 8), 0, 11), np.int32)
    new_state, metrics = step(state, {"x": tokens})
    return new_state, metrics


@pytest.fixture(scope="module")
def one_device_step():
    return _one_step(training.make_mesh(1))


@pytest.mark.parametrize("fsdp", [False, True])
def test_data_model_mesh_matches_one_device(one_device_step, fsdp):
    ref_state, ref_metrics = one_device_step
    mesh = training.make_mesh(shape="data:2,model:2")
    state, metrics = _one_step(mesh, fsdp=fsdp)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # The heads and MLP hidden units really are split over `model`.
    block = state.params["backbone"]["blocks"][0]
    assert block["attn"]["qkv"]["kernel"][...].sharding.spec[2] == "model"
    assert block["fc1"]["kernel"][...].sharding.spec[1] == "model"
    assert block["fc2"]["kernel"][...].sharding.spec[0] == "model"
    mu = state.opt_state[0].mu["backbone"]["blocks"][0]["attn"]["out"]["kernel"][...]
    assert mu.sharding.spec[0] == "model"
    if fsdp:
        assert "data" in block["fc1"]["kernel"][...].sharding.spec


def test_checkpoint_restores_across_mesh_shapes(tmp_path):
    state, _ = _one_step(training.make_mesh(4))
    with training.Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.save(1, state, force=True)
    mesh = training.make_mesh(shape="data:2,model:2")
    objective, params = training.make_discrete_objective(
        _token_model(), process=discrete.masked(11))
    optimizer = optax.adamw(1e-2)
    step = training.make_train_step(objective.loss_fn, optimizer, mesh=mesh, fsdp=True,
                                    fsdp_min_size=64)
    target = step.abstract_state(
        jax.eval_shape(lambda p: training.create_train_state(p, optimizer, rng=3), params))
    restored = training.Checkpointer(tmp_path / "ckpt").restore(target).state
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    kernel = restored.params["backbone"]["blocks"][0]["fc1"]["kernel"][...]
    assert tuple(kernel.sharding.spec) == ("data", "model")


def test_mesh_shape_and_divisibility_errors():
    assert shd.parse_mesh_shape("model:2, data:4") == {"data": 4, "model": 2}
    for bad, match in (("data:4,gpu:2", "not one of"), ("data:x", "must look like"),
                       ("model:2", "no 'data' axis"), ("data:2,data:2", "twice"),
                       ("data:0", "positive int")):
        with pytest.raises(ValueError, match=match):
            shd.parse_mesh_shape(bad)
    with pytest.raises(ValueError, match="needs 16 devices; 8 available"):
        training.make_mesh(shape="data:8,model:2")
    mesh = training.make_mesh(shape="data:2,model:4")
    model = models.TokenTransformer(11, seq_len=8, dim=48, depth=1, heads=6, rngs=nnx.Rngs(0))
    _, params, _ = training.split_model(model)
    with pytest.raises(ValueError, match=r"'heads', size 6\) is not divisible by the 'model' "
                                         r"mesh axis of size 4"):
        shd.state_shardings(params, mesh)


def test_bench_aot_cli_writes_the_report(tpu_devices, tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "bench/aot.py", "--config=toy", "--topology=" + TOPOLOGY,
         "--batch=64", "--config.sample.batch_size=8", "--config.sample.steps=4",
         f"--json={out}", "--norecord"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    keys = ["config", "topology", "chips", "params", "global_batch", "flops_per_step",
            "est_step_seconds", "estimate_source", "est_mfu", "hbm_per_chip_bytes",
            "hbm_capacity_bytes", "compile_seconds", "collectives"]
    assert sorted(report) == sorted(keys + ["sampler"])
    assert sorted(report["sampler"]) == sorted(keys)
    assert report["chips"] == 4 and report["global_batch"] == 64
    assert report["sampler"]["global_batch"] == 8 * 4
    assert report["estimate_source"] == "xla_cycles"
    assert "train step" in proc.stdout and "sampler" in proc.stdout


def test_bench_aot_takes_the_launchers_config_flag():
    # --config is experiments.common's flag: listed in --help, a built-in name resolved (a near
    # miss named in a one-line error, exit status 2) without compiling anything
    run = lambda *args: subprocess.run([sys.executable, "bench/aot.py", *args], cwd=REPO, capture_output=True,
                                       text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    helped = run("--help")  # absl prints the help and exits with status 1, as every launcher does
    assert "bench/aot.py:\n" in helped.stdout and "--config:" in helped.stdout, helped.stdout[-3000:]
    assert "toy_meanflow" in helped.stdout, helped.stdout[-3000:]
    bad = run("--config=toyy", "--notrain", "--nosampler", "--norecord")
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert bad.stderr.strip().splitlines()[-1].startswith("bench/aot.py: error: flag --config=toyy: ")
    assert "did you mean toy?" in bad.stderr
    missing = run("--notrain", "--nosampler", "--norecord")
    assert missing.returncode == 2 and "--config is required" in missing.stderr, missing.stderr[-3000:]
