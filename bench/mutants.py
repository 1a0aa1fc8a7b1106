"""Mutation testing: how many small, realistic bugs do the project's own tests catch?

    python bench/mutants.py                    # every mutant, appends a row to bench/RESULTS.md
    python bench/mutants.py --only solvers     # mutants whose name contains "solvers"
    python bench/mutants.py --list             # the list, without running anything

Each mutant (``bench/mutations/*.py``) replaces one exact piece of text in one file of the
library: a wrong sign, a factor of 2, a swapped argument, an off-by-one, a dropped term. The
runner copies the repository (tracked and untracked, not ignored, files) into a temporary
directory, checks that the unmutated copy passes the tests it is about to use, then applies
the mutants one at a time and runs only the tests that cover the mutated file (the ``TESTS``
mapping next to each list, ``python -m pytest -x``). A mutant is *killed* when a test fails
(the first failing test is printed) and *survives* when they all pass. Mutants documented as
equivalent (their ``equivalent`` field says why no test can tell them apart) are listed but not
counted. ``../shared/conformance`` is never run: the score is the project's own tests.

A list entry whose text does not occur exactly once in its file is *stale* and stops the run
before any test: the list must follow the code it mutates.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import results  # noqa: E402  (bench/results.py)



def load():
    """(mutants, tests) from every list under ``bench/mutations``; ``tests`` maps a file
    to the pytest targets that cover it."""
    mutants, tests = [], {}
    lists = sorted(f[:-3] for f in os.listdir(os.path.join(HERE, "mutations"))
                   if f.endswith(".py") and not f.startswith("_"))
    for name in lists:
        mod = importlib.import_module(f"mutations.{name}")
        mutants += mod.MUTANTS
        for path, targets in mod.TESTS.items():
            tests.setdefault(path, [])
            tests[path] += [t for t in targets if t not in tests[path]]
    names = [m.name for m in mutants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SystemExit(f"duplicate mutant names: {dup}")
    return mutants, tests


def check_stale(mutants, tests, root):
    problems = []
    for m in mutants:
        if m.path not in tests:
            problems.append(f"{m.name}: no TESTS entry for {m.path}")
            continue
        with open(os.path.join(root, m.path)) as f:
            count = f.read().count(m.old)
        if count != 1:
            problems.append(f"{m.name}: text occurs {count} times in {m.path}: {m.old!r}")
    return problems


def copy_repo(dest):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True, text=True).stdout.split("\n")
    for rel in filter(None, files):
        src = os.path.join(REPO, rel)
        if not os.path.isfile(src):
            continue  # deleted in the work tree
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))
    shared = os.path.join(os.path.dirname(REPO), "shared")
    if os.path.isdir(shared):  # tests that read ../shared find it beside the copy too
        os.symlink(shared, os.path.join(os.path.dirname(dest), "shared"))


def pytest(copy, targets, timeout, workers=0):
    """(passed, first failing test or '', seconds); ``workers > 0`` runs pytest-xdist."""
    env = dict(os.environ, PYTHONPATH=copy, PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "-p", "no:randomly", "-W", "ignore", *targets]
    if workers:
        cmd[3:3] = ["-n", str(workers)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"(timed out after {timeout:.0f} s)", time.perf_counter() - start
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return True, "", seconds
    hit = re.search(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    return False, hit.group(1) if hit else f"(pytest exit {proc.returncode})", seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="run mutants whose name contains this")
    ap.add_argument("--list", action="store_true", help="print the list and exit")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run")
    ap.add_argument("--jobs", type=int, default=1,
                    help="mutants tested at once, each in its own copy (the baseline runs on "
                         "this many pytest-xdist workers)")
    ap.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args(argv)

    mutants, tests = load()
    problems = check_stale(mutants, tests, REPO)
    if problems:
        raise SystemExit("stale mutants:\n  " + "\n  ".join(problems))
    chosen = [m for m in mutants if args.only in m.name]
    if args.list:
        for m in chosen:
            tag = " (equivalent)" if m.equivalent else ""
            print(f"{m.name:44s} {m.path}{tag}")
        print(f"{len(chosen)} mutants")
        return 0
    active = [m for m in chosen if not m.equivalent]

    if args.jobs < 1:
        raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffjax-mutants-") as tmp:
        copies = []
        for j in range(args.jobs):
            copy = os.path.join(tmp, str(j), "main")
            copy_repo(copy)
            copies.append(copy)
        copy = copies[0]
        where = subprocess.run([sys.executable, "-c", "import diffjax; print(diffjax.__file__)"],
                               cwd=copy, env=dict(os.environ, PYTHONPATH=copy),
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(copy):
            raise SystemExit(f"the copy's tests would import diffjax from {where!r}")
        targets = sorted({t for m in active for t in tests[m.path]})
        print(f"baseline: {len(targets)} test targets on the unmutated copy ...", flush=True)
        ok, failing, secs = pytest(copy, targets, args.timeout * 4,
                                   workers=args.jobs if args.jobs > 1 else 0)
        if not ok:
            raise SystemExit(f"the unmutated tests fail ({failing}); fix them first")
        print(f"baseline passed in {secs:.0f} s", flush=True)

        free = queue.Queue()
        for c in copies:
            free.put(c)
        lock = threading.Lock()
        killed, survived, done = [], [], [0]

        def run(m):
            copy = free.get()
            try:
                path = os.path.join(copy, m.path)
                with open(path) as f:
                    original = f.read()
                with open(path, "w") as f:
                    f.write(original.replace(m.old, m.new))
                try:
                    ok, failing, secs = pytest(copy, tests[m.path], args.timeout)
                finally:
                    with open(path, "w") as f:
                        f.write(original)
            finally:
                free.put(copy)
            with lock:
                (survived if ok else killed).append(m)
                done[0] += 1
                verdict = "SURVIVED" if ok else "killed  "
                print(f"[{done[0]:3d}/{len(active)}] {verdict} {m.name:44s} {secs:6.1f} s  "
                      f"{failing}", flush=True)

        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(run, active))
        order = {m.name: i for i, m in enumerate(active)}
        survived.sort(key=lambda m: order[m.name])

    for m in chosen:
        if m.equivalent:
            print(f"equivalent: {m.name}: {m.equivalent}")
    for m in survived:
        print(f"survived:   {m.name} ({m.path}): {m.old!r} -> {m.new!r}")
    share = len(killed) / max(len(active), 1)
    summary = (f"{len(killed)}/{len(active)} killed ({100 * share:.1f}%), "
               f"{len(chosen) - len(active)} documented as equivalent")
    print(summary + f", {time.perf_counter() - start:.0f} s")

    if not args.no_record:
        results.record("mutants", summary)
    return 0 if not survived else 1


if __name__ == "__main__":
    sys.exit(main())
