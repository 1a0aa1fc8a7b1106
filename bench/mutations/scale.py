"""Mutants: scale (deviceless TPU compilation, the data x model mesh, FSDP gathering, the
latent dataset)."""
from mutations import Mutant

AOT = "diffjax/training/aot.py"
SHARDING = "diffjax/training/sharding.py"
STEP = "diffjax/training/step.py"
LATENTS = "diffjax/data/latents.py"
DATA = "diffjax/data/__init__.py"

TESTS = {
    AOT: ["tests/training/test_aot.py"],
    SHARDING: ["tests/training/test_training_sharding.py", "tests/training/test_aot.py"],
    STEP: ["tests/training/test_aot.py"],
    LATENTS: ["tests/data/test_data_latents.py"],
    DATA: ["tests/data/test_data_api.py", "tests/data/test_data_latents.py"],
}

MUTANTS = [
    # ---------------------------------------------------------------- aot
    Mutant("scale.aot.loop_body_counted_once", AOT,
           "yield from walk(w.group(2), times * trips(line, w.group(1)), depth + 1)",
           "yield from walk(w.group(2), times, depth + 1)"),
    Mutant("scale.aot.known_trip_count_ignored", AOT,
           "        known = _TRIP.search(line)\n        if known:",
           "        known = _TRIP.search(line)\n        if False:"),
    Mutant("scale.aot.reduce_scatter_counted_as_all_reduce", AOT,
           'op = "reduce-scatter"', 'op = "all-reduce"'),
    Mutant("scale.aot.mfu_of_one_chip_against_all", AOT,
           "mfu = flops / (est * chip.peak_flops) if est > 0 else None",
           "mfu = flops / (est * chip.peak_flops * chips) if est > 0 else None"),
    Mutant("scale.aot.flops_of_one_chip", AOT,
           "flops_per_step=flops * chips,", "flops_per_step=flops,"),
    # ---------------------------------------------------------------- the model axis
    Mutant("scale.sharding.mlp_not_on_model_axis", SHARDING,
           'LOGICAL_RULES: Mapping[str, str] = {"heads": MODEL_AXIS, "mlp": MODEL_AXIS}',
           'LOGICAL_RULES: Mapping[str, str] = {"heads": MODEL_AXIS}'),
    Mutant("scale.sharding.indivisible_heads_replicated", SHARDING,
           "            if shape[i] % mesh.shape[axis]:\n                raise ValueError(",
           "            if shape[i] % mesh.shape[axis]:\n                continue\n"
           "                raise ValueError("),
    Mutant("scale.step.fsdp_params_not_gathered", STEP,
           "        if not self.fsdp:\n            return params",
           "        if True:\n            return params"),
    # ---------------------------------------------------------------- latents
    Mutant("scale.latents.scale_not_applied", LATENTS,
           'return {"x": x * np.float32(self.scale), "label": labels.astype(np.int32)}',
           'return {"x": x, "label": labels.astype(np.int32)}'),
    Mutant("scale.data.describe_latents_without_classes", DATA,
           "return _latent_info(name, split, spec.shape, spec.num_classes, None,",
           "return _latent_info(name, split, spec.shape, None, None,"),
]
