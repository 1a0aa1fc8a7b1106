"""Compiling for accelerators that are not attached: TPU topologies, cost and memory.

With ``libtpu`` installed (``pip install 'diffjax[tpu]'``) JAX describes any TPU slice
without owning it, and the real XLA:TPU compiler runs on the host CPU::

    devices = aot.topology_devices("v5e:4x4")                 # 16 abstract TPU v5e chips
    mesh = training.make_mesh(devices=devices, shape="data:8,model:2")
    step = training.make_train_step(loss_fn, optimizer, mesh=mesh)
    state, batch = step.abstract_state(shapes), aot.abstract_batch(...)  # shapes only
    report = aot.compile_and_analyze(step.jitted(state, batch), state, batch,
                                     chip=aot.chip_for("v5e:4x4"), chips=16)

:func:`compile_and_analyze` reports what one compiled step costs on one chip:

* ``flops_per_step``: XLA's flop count of the per-chip program times the number of chips
  (every chip's share, including replicated work such as the optimizer update). XLA counts
  the body of a loop it does not unroll once -- a sampler's `lax.scan` over the solver
  steps, and the loops of collective permutes the TPU compiler makes of FSDP's gathered
  matmuls -- so for MFU count model FLOPs instead (`Report.with_flops`; ``bench/aot.py``
  uses 3 forward passes for a train step, model calls x one call for a sampler);
* ``est_step_seconds`` and ``estimate_source``: the TPU compiler's own estimate, the sum of
  the ``estimated_cycles`` it writes into every fusion of the compiled HLO (loop bodies
  counted once per iteration of their known trip count) divided by the chip's clock
  (``"xla_cycles"``). ``cost_analysis()["optimal_seconds"]`` is used only where there are no
  cycle counts and it is positive (``"xla_cost"``; it comes back negative for real train
  steps), else the roofline bound max(flops / peak, bytes accessed / HBM bandwidth)
  (``"roofline"``). The roofline is printed beside the estimate as a cross-check; only its
  compute half is a hard bound (XLA's "bytes accessed" counts every fusion's operands and
  can exceed the real HBM traffic), so an estimate faster than flops / peak is replaced by
  it (``"roofline"``). Collectives carry no cycle counts, so the estimate leaves
  communication out: read it as the step time when communication overlaps compute;
* ``est_mfu`` = flops_per_step / (est_step_seconds * chips * peak bf16 FLOP/s);
* ``hbm_per_chip_bytes``: arguments + outputs + temporaries - aliased (donated) buffers +
  code, from ``memory_analysis()``; with donation the outputs alias the inputs, so this is
  the state once plus the step's temporaries. A program that does not fit is refused by the
  compiler; that refusal is reported (``fits: False`` and the compiler's message), not raised;
* ``collectives``: how many of each collective op the compiled HLO holds (static count).

The chip table (:data:`CHIPS`) holds the published per-chip bf16 peak, HBM capacity and HBM
bandwidth (Google Cloud TPU system architecture pages; NVIDIA H100/H200 SXM datasheets,
dense bf16). TPU clocks are derived from the peak and the matrix units the same pages list:
peak = 2 x (MACs per cycle of all MXUs) x clock, e.g. v5e: 4 MXUs of 128 x 128 at 1.5 GHz
give 197 TFLOP/s.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time
from typing import Any, Callable, Optional


__all__ = [
    "Chip", "CHIPS", "chip_for", "topology_devices", "compile_and_analyze", "hlo_cycles",
    "count_collectives", "hlo_dtypes", "top_instructions", "Report",
]


def __dir__():
    return sorted(__all__)


GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip: bf16 dense peak (FLOP/s), HBM capacity (bytes) and bandwidth
    (bytes/s), clock (Hz, for the TPU compiler's cycle counts; None for GPUs)."""

    name: str
    peak_flops: float
    hbm_bytes: int
    hbm_bandwidth: float
    clock_hz: Optional[float]


def _tpu(name, peak_tflops, hbm_gib, bw_tbs, mxus, mxu_size):
    clock = peak_tflops * 1e12 / (2 * mxus * mxu_size**2)
    return Chip(name, peak_tflops * 1e12, int(hbm_gib * GIB), bw_tbs * 1e12, clock)


CHIPS: dict[str, Chip] = {
    # name: peak bf16 TFLOP/s, HBM GiB, HBM TB/s, MXUs per chip, MXU size -> clock
    "v4": _tpu("TPU v4", 275, 32, 1.2, 8, 128),      # 2 TensorCores x 4 MXUs: 1.05 GHz
    "v5e": _tpu("TPU v5e", 197, 16, 0.82, 4, 128),   # 1 TensorCore x 4 MXUs: 1.5 GHz
    "v5p": _tpu("TPU v5p", 459, 95, 2.76, 8, 128),   # 2 TensorCores x 4 MXUs: 1.75 GHz
    "v6e": _tpu("TPU v6e", 918, 32, 1.64, 4, 256),   # 1 TensorCore x 4 MXUs 256^2: 1.75 GHz
    "h100": Chip("NVIDIA H100 SXM", 989e12, 80 * 10**9, 3.35e12, None),
    "h200": Chip("NVIDIA H200 SXM", 989e12, 141 * 10**9, 4.8e12, None),
}


def chip_for(topology_or_device: Any) -> Chip:
    """The :data:`CHIPS` entry of a topology name (``"v5e:4x4"``), a chip name (``"h100"``)
    or a device (its ``device_kind``, e.g. ``"TPU v5 lite"``, ``"NVIDIA H100 80GB HBM3"``)."""
    if isinstance(topology_or_device, str):
        name = topology_or_device.split(":")[0].lower()
        if name in CHIPS:
            return CHIPS[name]
        raise ValueError(f"unknown chip {topology_or_device!r}; known: {sorted(CHIPS)}")
    kind = str(getattr(topology_or_device, "device_kind", "")).lower()
    for key, pattern in (("v5e", "v5 lite"), ("v5e", "v5e"), ("v5p", "v5p"), ("v6e", "v6"),
                         ("v4", "v4"), ("h200", "h200"), ("h100", "h100")):
        if pattern in kind:
            return CHIPS[key]
    raise ValueError(f"no chip entry for device kind {kind!r}; known: {sorted(CHIPS)}")


def topology_devices(topology: str) -> list:
    """Abstract devices of a TPU slice (e.g. ``"v5e:2x2"``, ``"v5p:2x2x4"``), usable in a
    `jax.sharding.Mesh` for lowering and compiling; needs ``libtpu``.

    Raises:
      RuntimeError: libtpu is missing or the topology is not known to it.
    """
    from jax.experimental import topologies  # pylint: disable=import-outside-toplevel

    if not isinstance(topology, str) or ":" not in topology:
        raise ValueError(f"topology must look like 'v5e:2x2'; got {topology!r}")
    # libtpu takes a machine-wide lock on load, meant for processes that own the chips; a
    # process that only compiles owns none, so several (test workers, bench runs) may load it.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        return list(topologies.get_topology_desc(topology, platform="tpu").devices)
    except Exception as e:  # noqa: BLE001 -- jaxlib raises several types here; all mean the same
        raise RuntimeError(
            f"cannot describe TPU topology {topology!r}: {type(e).__name__}: {e}. Compiling "
            f"for TPU without TPUs needs libtpu (pip install 'diffjax[tpu]')") from e


# ---------------------------------------------------------------------------- the HLO
_COMP_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CYCLES = re.compile(r'"estimated_cycles":"(\d+)"')
_WHILE = re.compile(r"\swhile\(.*?condition=%?([\w.\-]+), body=%?([\w.\-]+)")
_CONST = re.compile(r"%([\w.\-]+) = s32\[\]\S* constant\((\d+)\)")
_LT = re.compile(r"compare\(%[\w.\-]+, %([\w.\-]+)\), direction=LT")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_CALL = re.compile(r"\s(?:call|async-start)\(.*?(?:to_apply|calls)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"\sconditional\(.*?branch_computations=\{([^}]*)\}")
_REDUCE_SCATTER_FUSION = re.compile(r"\sfusion\(.*calls=%?all-reduce-scatter")
_COLLECTIVE = re.compile(
    r"=\s*\S.*?\s(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute|"
    r"collective-broadcast|ragged-all-to-all)(-start)?\(")


def _computations(hlo: str) -> tuple[dict[str, list[str]], Optional[str]]:
    comps, entry, name = {}, None, None
    for line in hlo.splitlines():
        if name is None:
            m = _COMP_HEADER.match(line)
            if m:
                name = m.group(2)
                comps[name] = []
                if m.group(1):
                    entry = name
        elif line.strip() == "}":
            name = None
        else:
            comps[name].append(line)
    return comps, entry


def hlo_cycles(hlo: str) -> int:
    """The TPU compiler's estimated cycles of one run of the entry computation: the sum of
    ``estimated_cycles`` over its instructions, a ``while`` loop counting its body its
    trip count times, calls their callee, conditionals their most expensive branch. The trip
    count is the compiler's ``known_trip_count``, else the bound ``N`` of a condition
    ``i < N`` (a counted loop from 0, as `lax.scan` and `lax.fori_loop` compile), else 1
    (a data-dependent loop, e.g. an adaptive solver). 0 where the compiler writes no
    estimates (CPU, GPU)."""
    return sum(cycles for cycles, _ in _costed_instructions(hlo))


def top_instructions(hlo: str, n: int = 10) -> list[tuple[int, str]]:
    """The ``n`` costliest ``(cycles, what)`` of :func:`hlo_cycles`'s sum, ``what`` being the
    instruction's source op (its ``op_name`` metadata) or HLO text; a loop body's instruction
    counts once per trip. Where the time goes, by the compiler's account."""
    by_op: dict[str, int] = {}
    for cycles, what in _costed_instructions(hlo):
        by_op[what] = by_op.get(what, 0) + cycles
    return sorted(((c, w) for w, c in by_op.items()), reverse=True)[:n]


_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _costed_instructions(hlo: str):
    """``(cycles x trips, op)`` for every instruction with a cycle estimate reachable from
    the entry computation."""
    comps, entry = _computations(hlo)

    def trips(line: str, condition: str) -> int:
        known = _TRIP.search(line)
        if known:
            return int(known.group(1))
        lines = comps.get(condition, [])
        constants = dict(m.groups() for m in map(_CONST.search, lines) if m)
        for m in filter(None, map(_LT.search, lines)):
            if m.group(1) in constants:
                return int(constants[m.group(1)])
        return 1

    def walk(name: str, times: int, depth: int):
        if depth > 64 or name not in comps:
            return
        for line in comps[name]:
            m = _CYCLES.search(line)
            if m:
                op = _OP_NAME.search(line)
                yield int(m.group(1)) * times, (op.group(1) if op else line.strip()[:80])
            w = _WHILE.search(line)
            if w:
                yield from walk(w.group(2), times * trips(line, w.group(1)), depth + 1)
                continue
            c = _CALL.search(line)
            if c and not m:
                yield from walk(c.group(1), times, depth + 1)
            b = _BRANCHES.search(line)
            if b:
                names = [s.strip().lstrip("%") for s in b.group(1).split(",") if s.strip()]
                costs = {n: sum(c for c, _ in walk(n, times, depth + 1)) for n in names}
                if costs:
                    yield from walk(max(costs, key=costs.get), times, depth + 1)

    return list(walk(entry, 1, 0)) if entry else []


def count_collectives(hlo: str) -> dict[str, int]:
    """``{op: count}`` of the collectives in the HLO text, over every computation (a static
    count: a loop body's ops count once). Async ``-start``/``-done`` pairs count once, under
    the op's name; XLA:TPU's reduce-scatter, a fusion calling an ``all-reduce-scatter``
    computation (an all-reduce whose result is sliced per device), counts as one
    ``reduce-scatter``, not as an all-reduce."""
    comps, _ = _computations(hlo)
    counts: dict[str, int] = {}
    for name, lines in comps.items():
        if name.startswith("all-reduce-scatter"):
            continue
        for line in lines:
            if _REDUCE_SCATTER_FUSION.search(line):
                op = "reduce-scatter"
            else:
                m = _COLLECTIVE.search(line)
                if not m:
                    continue
                op = m.group(1)
            counts[op] = counts.get(op, 0) + 1
    return dict(sorted(counts.items()))


def hlo_dtypes(hlo: str) -> set[str]:
    """The element types appearing in the HLO's shapes (e.g. ``{"f32", "bf16", "s32"}``)."""
    return set(re.findall(r"\b((?:f|s|u|bf|c)\d+|pred)\[", hlo))


# ---------------------------------------------------------------------------- analysis
@dataclasses.dataclass
class Report:
    """One compiled program on ``chips`` chips; see the module docstring for each field."""

    chips: int
    flops_per_step: Optional[float]
    est_step_seconds: Optional[float]
    estimate_source: Optional[str]
    est_mfu: Optional[float]
    roofline_seconds: Optional[float]
    hbm_per_chip_bytes: Optional[int]
    hbm_capacity_bytes: int
    compile_seconds: float
    collectives: dict
    fits: bool
    error: str = ""
    hlo: str = dataclasses.field(default="", repr=False)

    def with_flops(self, flops_per_step: float, chip: "Chip") -> "Report":
        """This report with the FLOPs counted another way (e.g. model calls x one call's
        FLOPs, where the program's loops hide work from XLA's count) and the MFU and the
        roofline that follow; the time estimate is kept unless faster than the new flops /
        peak."""
        per_chip = flops_per_step / self.chips
        out = dataclasses.replace(self, flops_per_step=flops_per_step)
        if self.est_step_seconds is not None:
            if self.est_step_seconds < per_chip / chip.peak_flops:
                out.est_step_seconds, out.estimate_source = per_chip / chip.peak_flops, "roofline"
            out.roofline_seconds = max(self.roofline_seconds or 0.0, per_chip / chip.peak_flops)
            out.est_mfu = per_chip / (out.est_step_seconds * chip.peak_flops)
        return out

    def as_dict(self) -> dict:
        """The JSON fields of ``bench/aot.py`` (no HLO, no roofline, no error)."""
        return {k: getattr(self, k) for k in (
            "chips", "flops_per_step", "est_step_seconds", "estimate_source", "est_mfu",
            "hbm_per_chip_bytes", "hbm_capacity_bytes", "compile_seconds", "collectives")}


_OOM = re.compile(r"RESOURCE_EXHAUSTED|[Rr]an out of memory|exceeds the memory|"
                  r"Program hbm requirement")
_USED = re.compile(r"([\d.]+)([KMGT])i?B? of ([\d.]+)([KMGT])i?B? hbm", re.I)
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _oom_bytes(message: str) -> Optional[int]:
    m = _USED.search(message)
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()]) if m else None


def compile_and_analyze(jitted: Callable, *args: Any, chip: Chip, chips: int) -> Report:
    """Lower and compile ``jitted`` (a `jax.jit` function) for ``args`` (arrays or
    `jax.ShapeDtypeStruct` with shardings on an abstract mesh) and analyse the result.

    A compiler refusal for lack of device memory gives a report with ``fits=False`` and the
    message; any other error is raised.
    """
    start = time.perf_counter()
    try:
        compiled = jitted.lower(*args).compile()
    except Exception as e:  # noqa: BLE001 -- XlaRuntimeError and friends; re-raised below
        message = str(e)
        if not _OOM.search(message):
            raise
        return Report(chips, None, None, None, None, None, _oom_bytes(message), chip.hbm_bytes,
                      time.perf_counter() - start, {}, False, error=message.strip()[:2000])
    seconds = time.perf_counter() - start
    hlo = compiled.as_text()
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else {}
    flops = float(cost.get("flops", 0.0))
    bytes_accessed = float(cost.get("bytes accessed", 0.0))
    roofline = max(flops / chip.peak_flops, bytes_accessed / chip.hbm_bandwidth)
    cycles = hlo_cycles(hlo)
    optimal = float(cost.get("optimal_seconds", -1.0))
    if cycles > 0 and chip.clock_hz:
        est, source = cycles / chip.clock_hz, "xla_cycles"
    elif optimal > 0:
        est, source = optimal, "xla_cost"
    else:
        est, source = roofline, "roofline"
    if est < flops / chip.peak_flops:
        est, source = flops / chip.peak_flops, "roofline"
    mem = compiled.memory_analysis()
    hbm = None
    if mem is not None:
        hbm = int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
                  - mem.alias_size_in_bytes + mem.generated_code_size_in_bytes)
    mfu = flops / (est * chip.peak_flops) if est > 0 else None
    return Report(chips=chips, flops_per_step=flops * chips, est_step_seconds=est,
                  estimate_source=source, est_mfu=mfu, roofline_seconds=roofline,
                  hbm_per_chip_bytes=hbm, hbm_capacity_bytes=chip.hbm_bytes,
                  compile_seconds=seconds, collectives=count_collectives(hlo),
                  fits=hbm is None or hbm <= chip.hbm_bytes, hlo=hlo)


def mfu(flops_per_step: float, seconds: float, chips: int, chip: Chip) -> float:
    """Model-FLOP utilisation of a measured or estimated step."""
    return flops_per_step / (seconds * chips * chip.peak_flops) if seconds > 0 else math.nan
