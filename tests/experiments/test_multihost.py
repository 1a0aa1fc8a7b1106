"""Multi-host training for real: two processes joined by ``jax.distributed`` on localhost
(2 CPU devices each, gloo collectives), each reading its own half of every batch, against one
process with the same 4 devices; the checkpoint they write together restores and resumes on
one device; a SIGTERM to one of them stops both at the same checkpointed step."""
import json
import os
import re
import signal
import socket
import time

import numpy as np
import pytest
from absl import app, flags

from launcher_helpers import checkpoint_steps, run_cli, start_cli  # puts the repo on sys.path

from experiments import common, tasks, train  # noqa: E402
from diffjax import training  # noqa: E402
from diffjax.training.checkpoint import tree_paths  # noqa: E402

# A tiny toy run with a constant learning rate, so that runs of 8 and 12 steps share a schedule.
ARGS = (
    "--config=experiments/configs/toy.py", "--config.data.batch_size=32",
    "--config.model.hidden=16", "--config.model.depth=1", "--config.model.time_embed_dim=8",
    "--config.optim.warmup_steps=0", "--config.optim.end_lr_ratio=1.0",
    "--config.train.checkpoint_every=4", "--config.train.log_every=4",
    "--config.sample.num_samples=64", "--config.sample.batch_size=64",
    "--config.sample.steps=4",
)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _restore(workdir, step):
    config = common.load_config(workdir)
    exp = tasks.get(config).experiment(config, workdir, mesh=training.make_mesh(1))
    try:
        return exp.checkpointer.restore(exp.abstract_state(), step=step)
    finally:
        exp.close()


def _assert_same(a, b, tol=1e-5):
    """Equal checkpoints: step, data position, RNG and counters exactly; params, EMA and
    optimizer moments to ``tol`` (float rounding of differently split all-reduces)."""
    assert a.step == b.step and a.data_state == b.data_state
    pa, pb = tree_paths(a.state), tree_paths(b.state)
    assert sorted(pa) == sorted(pb)
    for name in pa:
        x, y = np.asarray(pa[name]), np.asarray(pb[name])
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def _distributed(workdir, address, *extra, log_dir=None):
    """Two ``experiments.train --distributed`` processes with 2 CPU devices each; output to
    pipes, or to ``log_dir/{0,1}.log``."""
    return [start_cli("experiments.train", *ARGS, f"--workdir={workdir}", *extra,
                      "--distributed", f"--coordinator_address={address}", "--num_processes=2",
                      f"--process_id={i}", devices=2,
                      log=None if log_dir is None else os.path.join(log_dir, f"{i}.log"))
            for i in range(2)]


def test_two_processes_train_like_one_and_resume_on_one_device(tmp_path):
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    address = f"localhost:{_free_port()}"
    procs = _distributed(multi, address, "--config.train.num_steps=8")
    # Meanwhile: one process, the same 4 devices, 12 steps without interruption.
    run_cli("experiments.train", *ARGS, f"--workdir={single}", "--config.train.num_steps=12",
            devices=4)
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    assert "process 1 of 2, 2 local / 4 global devices" in outs[1][1]
    assert "final metrics:" in outs[0][0] and "final metrics:" not in outs[1][0]  # process 0 reports

    # Written together by both processes, step 8 equals the single process's step 8 (the
    # hosts' halves of each batch make up the single-host batch).
    assert checkpoint_steps(multi) == [4, 8]
    _assert_same(_restore(multi, 8), _restore(single, 8))
    summary = json.load(open(os.path.join(multi, "train_summary.json")))
    assert summary["step"] == 8 and np.isfinite(summary["quality"]["sw_over_std"])

    # Resumed in one process on one device, the multi-host run continues to the same step 12.
    resumed = run_cli("experiments.train", *ARGS, f"--workdir={multi}",
                      "--config.train.num_steps=12")
    assert "Resuming from checkpoint step 8" in resumed.stderr
    _assert_same(_restore(multi, 12), _restore(single, 12))


def test_sigterm_to_one_host_stops_every_host_at_one_checkpointed_step(tmp_path):
    """A preemption notice may reach one host only. A host that saves and stops alone leaves
    the others blocked in its collectives (two processes hung this way before the fix); the
    preemption service makes every host stop after the same step, with one checkpoint."""
    workdir = str(tmp_path / "run")
    procs = _distributed(workdir, f"localhost:{_free_port()}", "--config.train.num_steps=100000",
                         "--config.train.checkpoint_every=50000",
                         "--config.train.log_every=50000", "--config.train.steps_per_call=2",
                         log_dir=str(tmp_path))
    logs = [tmp_path / f"{i}.log" for i in range(2)]
    try:
        deadline = time.monotonic() + 180
        while not all("first step" in p.read_text() for p in logs):  # both are training
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                logs[0].read_text()[-3000:] + logs[1].read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2.0)
        procs[1].send_signal(signal.SIGTERM)  # host 1 only
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    texts = [p.read_text() for p in logs]
    assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
    stops = [re.findall(r"Stopped at step (\d+) after SIGTERM", t) for t in texts]
    assert stops[0] and stops[0] == stops[1], stops  # both hosts, the same step
    step = int(stops[0][0])
    assert step % 2 == 0 and checkpoint_steps(workdir) == [step]  # a call boundary, committed
    restored = _restore(workdir, step)
    assert restored.step == step and restored.data_state["position"] == step


def test_distributed_flags_need_distributed():
    values = flags.FlagValues()
    train.define_flags(values)  # the launcher's own flags
    values(["prog", "--num_processes=2"])
    with pytest.raises(app.UsageError, match="--num_processes only apply with --distributed"):
        train.distributed_kwargs(values)
    values(["prog", "--distributed", "--num_processes=2", "--process_id=1"])
    assert train.distributed_kwargs(values) == {"num_processes": 2, "process_id": 1}
