"""``bench/gpu.py`` (the accelerator throughput script) runs anywhere with tiny models, and
its FLOP count is at least the dense-layer work of a train step."""
import importlib.util
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(REPO, "bench",
                                                                            "gpu.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_runs_on_cpu_with_a_tiny_model():
    bench = _bench_gpu()
    (r,) = bench.main(["--tiny", "--steps=1", "--cases=toy", "--norecord"])
    assert r["case"] == "toy" and r["global_batch"] >= 2
    assert r["examples_per_s"] > 0 and r["samples_per_s"] > 0 and r["sample_steps"] == 2
    assert r["mfu"] is None and r["est_step_ms"] is None  # a CPU has no chip entry
    # Forward + backward through the MLP's dense layers: at least 6 flops per weight and
    # example (the count covers every device's share of the batch).
    config = bench.load_config("toy", tiny=True)
    assert config.model.hidden == 32 and config.model.depth == 1
    assert r["flops_per_step"] >= 6 * r["params"] * r["global_batch"] * 0.5
    assert np.isfinite(r["step_ms"])
