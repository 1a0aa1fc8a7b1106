"""Test configuration: CPU only, 8 simulated devices available for sharding tests, and one
compilation cache per test run shared by the xdist workers and the launchers they start (many
tests compile the same tiny programs; a fresh run starts with an empty cache)."""
import os
import shutil
import tempfile

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags = (flags + " --xla_force_host_platform_device_count=8").strip()
os.environ["XLA_FLAGS"] = flags

# The process that starts the run (the xdist controller, or the only process) makes the cache
# directory; the workers and the launchers inherit it through the environment; it is removed at
# the end of the run.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="diffjax-tests-jax-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import jax  # noqa: E402  (after the environment above; in case a plugin imported it earlier)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group into the node id
def pytest_collection_modifyitems(config, items):
    """With ``-n`` (``--dist loadgroup``): the tests of a module that uses a module- or
    session-scoped fixture (a trained workdir) run on one worker, so the fixture is built once;
    every other test is scheduled on its own, which keeps both workers busy to the end."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        defs = defs.name2fixturedefs.values() if defs is not None else ()
        # ours only: pytest's own session fixtures (tmp_path_factory) have an empty baseid
        if any(d and d[-1].scope in ("module", "session") and d[-1].baseid for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def pytest_sessionfinish(session):
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def record_calls():
    """``record_calls(net) -> (model_fn, calls)``: ``model_fn(x, t, p)`` returns ``net(x, t, p)``
    and appends the arrays ``(x, t, p)`` of every call, in order, to ``calls`` (under jit too;
    call ``jax.effects_barrier()`` before reading them)."""
    def make(net):
        calls = []

        def model_fn(x, t, p):
            jax.debug.callback(lambda *a: calls.append(tuple(np.asarray(v) for v in a)), x, t, p,
                               ordered=True)
            return net(x, t, p)
        return model_fn, calls
    return make
