"""Shared by the launcher tests: the repository root (put on sys.path), the CLI runner and the
checkpoint steps of a workdir."""
import glob
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from experiments import common  # noqa: E402


def cli_env(devices=1):
    """The environment of a launcher subprocess: CPU with ``devices`` simulated devices."""
    return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def start_cli(module, *args, devices=1, log=None):
    """``python -m module args`` started from the repository root (not waited for); output
    to pipes, or to the file ``log`` (stdout and stderr together)."""
    cmd = [sys.executable, "-m", module, *args]
    if log is None:
        return subprocess.Popen(cmd, cwd=REPO, env=cli_env(devices), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=REPO, env=cli_env(devices), stdout=out,
                                stderr=subprocess.STDOUT, text=True)


def run_cli(module, *args, timeout=300, devices=1):
    """``python -m module args`` from the repository root with ``devices`` CPU devices (one by
    default; the in-process tests use the 8 simulated ones); asserts success and returns the
    CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=cli_env(devices),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def checkpoint_steps(workdir):
    """The committed checkpoint steps in ``workdir``, ascending."""
    return sorted(int(os.path.basename(p)) for p in
                  glob.glob(os.path.join(workdir, common.CHECKPOINT_DIR, "[0-9]*")))
