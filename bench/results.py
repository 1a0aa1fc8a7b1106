"""``bench/RESULTS.md``: one dated row per bench run (command, commit, machine, figures).

Every bench script ends with `record`, so the measured figures of the project live in one
file, each with what produced it; the README and docstrings carry none.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PATH = os.path.join(HERE, "RESULTS.md")
HEADER = ("# Bench results\n\n"
          "Rows appended by the scripts in `bench/` (each ends with `bench/results.py`'s "
          "`record`), newest last. `commit` is the checkout the bench ran on (`+changes`: with "
          "uncommitted changes to it); `machine` is the host's architecture, core count and "
          "JAX backend.\n\n"
          "| date | bench | command | commit | machine | result |\n"
          "|---|---|---|---|---|---|\n")


def commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "diffjax", "experiments", "bench", "tests",
                  ":(exclude)bench/RESULTS.md")
    return rev + ("+changes" if changed else "")


def machine() -> str:
    backend = "cpu"
    if "jax" in sys.modules:
        backend = sys.modules["jax"].default_backend()
    return f"{platform.machine()}, {os.cpu_count()} cores, {backend}"


def record(bench: str, result: str, argv=None) -> str:
    """Append ``| date | bench | command | commit | machine | result |`` to RESULTS.md and
    return the row. ``argv`` defaults to this process's command line."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), REPO)
    command = " ".join(["python", script] + [shlex.quote(a) for a in argv[1:]])
    row = (f"| {datetime.date.today().isoformat()} | {bench} | `{command}` | {commit()} | "
           f"{machine()} | {result.replace('|', '/')} |")
    if not os.path.exists(PATH):
        with open(PATH, "w") as f:
            f.write(HEADER)
    with open(PATH, "a") as f:
        f.write(row + "\n")
    print(f"recorded in {os.path.relpath(PATH, os.getcwd())}: {row}")
    return row
