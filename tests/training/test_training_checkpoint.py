"""Checkpoints: bit-exact resume, crash safety, resharding restores, corruption, mismatch,
retention, metadata and SIGTERM."""
import glob
import json
import logging
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import training
from training_helpers import (OPT_CONFIG, ToyData, abstract_state, build, flat, run_script,
                              setup)


def _train(state_step, data, num_steps, **kwargs):
    train_step, state = state_step
    return training.train(train_step, state, data, num_steps=num_steps, progress=False,
                          log_every=1000, **kwargs)


def _saved_run(directory, steps=2, **setup_kwargs):
    """Train ``steps`` steps on 8 devices, checkpoint the result; return its flat arrays."""
    mesh = training.make_mesh(8)
    train_step, state = setup(mesh, **setup_kwargs)
    data = ToyData(16)
    for _ in range(steps):
        state, _ = train_step(state, next(data))
    with training.Checkpointer(directory, config={"hidden": 32}) as ckpt:
        assert ckpt.save(steps, state, data.get_state(), force=True)
    return flat(state)


@pytest.mark.parametrize("steps_per_call", [1, 2])
def test_interrupted_run_resumes_bit_exact(tmp_path, steps_per_call):
    """Also with several steps per compiled call: calls end at the checkpoint interval
    (3, odd) and at multiples of steps_per_call, so the resumed run makes the same calls."""
    mesh = training.make_mesh(8)
    poison = (1, 5)  # one skipped update before and one after the interruption
    total, stop = 7, 3
    spc = dict(steps_per_call=steps_per_call)

    reference = _train(setup(mesh), ToyData(16, poison=poison), total, **spc).state
    reference = flat(reference)
    assert int(reference["skipped"]) == 2

    directory = tmp_path / "ckpt"
    ckpt = training.Checkpointer(directory, save_interval_steps=stop)
    first = _train(setup(mesh), ToyData(16, poison=poison), stop, checkpointer=ckpt, **spc)
    assert first.step == stop and ckpt.all_steps() == [stop]
    ckpt.close()
    del first, ckpt  # throw everything away

    # A fresh process would do exactly this: target from the mesh, restore, rebuild the data.
    train_step, _, _ = build(mesh)
    ckpt = training.Checkpointer(directory, save_interval_steps=stop)
    restored = ckpt.restore(abstract_state(mesh))
    assert restored.step == stop and restored.data_state["index"] == stop
    data = ToyData.from_state(restored.data_state)
    resumed = training.train(train_step, restored.state, data, num_steps=total,
                             checkpointer=ckpt, progress=False, **spc)
    assert ckpt.all_steps() == [3, 6, 7]
    ckpt.close()
    got = flat(resumed.state)
    assert sorted(got) == sorted(reference)
    for k in reference:  # params, EMA, optimizer state, RNG, step, skip counter
        np.testing.assert_array_equal(got[k], reference[k], err_msg=k)
    assert {"rng", "step", "skipped", "ema_params.l1.kernel.value",
            "opt_state.1.0.mu.l1.kernel.value"} <= set(got)


def test_sigkill_during_async_save_keeps_previous_step(tmp_path):
    directory = tmp_path / "ckpt"
    proc = run_script("sigkill", directory, devices=1)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ckpt = training.Checkpointer(directory)
    assert ckpt.all_steps() == [1]
    mesh = training.make_mesh(1)
    target = {"w": jax.ShapeDtypeStruct((32 * 2**20,), jnp.float32,
                                        sharding=training.replicated(mesh))}
    restored = ckpt.restore(target)
    assert restored.step == 1 and restored.data_state == {"index": 1}
    w = np.asarray(restored.state["w"])
    assert w[0] == 0.0 and w[-1] == 32 * 2**20 - 1 and w[12345] == 12345.0
    ckpt.close()


def test_checkpoint_from_8_devices_restores_on_1_and_2(tmp_path):
    directory = tmp_path / "ckpt"
    expected = _saved_run(directory, fsdp=True)  # saved FSDP-sharded over 8 devices
    np.savez(tmp_path / "expected.npz", **expected)
    for devices, layout in ((1, []), (2, ["--fsdp"])):
        proc = run_script("restore", directory, tmp_path / "expected.npz", *layout,
                          devices=devices)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"OK devices={devices} step=2" in proc.stdout
    # The 2-device FSDP restore really is sharded over 2 devices on the hidden axis.
    assert "spec=P(None, 'data')" in proc.stdout


@pytest.mark.parametrize("damage", ["truncate_data", "delete_metadata"])
def test_corrupt_latest_step_falls_back_with_log(tmp_path, caplog, damage):
    directory = tmp_path / "ckpt"
    mesh = training.make_mesh(8)
    train_step, state = setup(mesh)
    data = ToyData(16)
    with training.Checkpointer(directory, save_interval_steps=1) as ckpt:
        for _ in range(2):
            state, _ = train_step(state, next(data))
            ckpt.save(int(state.step), state, data.get_state())
    assert sorted(os.listdir(directory)) == ["1", "2"]
    if damage == "truncate_data":
        files = glob.glob(str(directory / "2" / "state" / "d" / "*"))
        assert files
        for f in files:
            with open(f, "r+b") as fh:
                fh.truncate(8)
    else:
        os.remove(directory / "2" / "state" / "_METADATA")

    with caplog.at_level(logging.WARNING):
        restored = training.Checkpointer(directory).restore(abstract_state(mesh))
    assert restored.step == 1 and restored.data_state["index"] == 1
    assert int(restored.state.step) == 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "Checkpoint step 2" in messages and "falling back" in messages


def test_shape_mismatch_is_refused_naming_entries(tmp_path):
    directory = tmp_path / "ckpt"
    _saved_run(directory)  # hidden width 32
    mesh = training.make_mesh(8)
    ckpt = training.Checkpointer(directory)
    with pytest.raises(training.CheckpointMismatchError) as err:
        ckpt.restore(abstract_state(mesh, hidden=16))
    msg = str(err.value)
    assert "params.l1.kernel.value: checkpoint shape (4, 32) != target shape (4, 16)" in msg
    assert "ema_params.l2.kernel.value" in msg and "opt_state.1.0.nu.l1.bias.value" in msg
    assert "params.l2.bias.value" not in msg  # (4,) either way: not named

    target = abstract_state(mesh).replace(ema_params={})  # a different structure
    with pytest.raises(training.CheckpointMismatchError, match="ema_params.l1.kernel.value: in "
                       "checkpoint"):
        ckpt.restore(target)
    with pytest.raises(FileNotFoundError, match="step 5 not found"):
        ckpt.restore(abstract_state(mesh), step=5)
    ckpt.close()


def test_keep_n_interval_and_metadata(tmp_path):
    directory = tmp_path / "ckpt"
    state = {"a": jnp.arange(3.0)}
    config = {"model": {"hidden": 32}, "optim": OPT_CONFIG}
    with training.Checkpointer(directory, max_to_keep=2, save_interval_steps=2,
                               config=config) as ckpt:
        saved = [ckpt.save(s, state, {"index": s}) for s in range(1, 8)]
        assert saved == [False, True, False, True, False, True, False]
        ckpt.wait()
        assert ckpt.all_steps() == [4, 6]
        target = {"a": jax.ShapeDtypeStruct((3,), jnp.float32)}
        restored = ckpt.restore(target)
    assert restored.step == 6 and restored.data_state == {"index": 6}
    assert restored.meta["config"] == json.loads(json.dumps(config))
    versions = restored.meta["versions"]
    assert versions["jax"] == jax.__version__
    assert {"flax", "optax", "orbax-checkpoint", "diffjax"} <= set(versions)


def test_no_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
        training.Checkpointer(tmp_path / "empty").restore({"a": jnp.zeros(2)})


def test_sigterm_saves_at_step_boundary_and_stops(tmp_path):
    mesh = training.make_mesh(8)
    directory = tmp_path / "ckpt"
    previous = signal.getsignal(signal.SIGTERM)
    ckpt = training.Checkpointer(directory, save_interval_steps=1000)

    def send_sigterm(step, state, metrics):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    train_step, state = setup(mesh)
    result = training.train(train_step, state, ToyData(16), num_steps=50, checkpointer=ckpt,
                            progress=False, log_every=1, callbacks=[send_sigterm],
                            logdir=str(tmp_path / "tb"))
    assert result.preempted and result.step == 3
    assert ckpt.all_steps() == [3]  # saved (and committed) although 3 is off the interval
    assert signal.getsignal(signal.SIGTERM) == previous  # handler removed after the run
    ckpt.close()
    restored = training.Checkpointer(directory).restore(abstract_state(mesh))
    assert restored.data_state["index"] == 3
    np.testing.assert_array_equal(flat(restored.state)["params.l1.kernel.value"],
                                  flat(result.state)["params.l1.kernel.value"])
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents*"))
