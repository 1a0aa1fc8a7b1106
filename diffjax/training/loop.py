"""A thin training loop over the pure pieces (train step, checkpointer, data iterator).

::

    result = train(train_step, state, batches, num_steps=10_000, checkpointer=ckpt,
                   data_state_fn=batches.get_state, logdir=workdir)

It resumes from ``int(state.step)``, feeds one host batch per step, blocks on a result at
least every 16 steps (XLA on simulated CPU devices aborts when too many computations are in
flight; it also bounds the dispatch queue elsewhere), logs loss / grad norm / learning rate /
steps/s / examples/s with absl logging (every ``log_every`` steps), a tqdm bar when stderr is a
terminal (a bar written to a log file is kilobytes of carriage returns) and TensorBoard event files, saves
checkpoints on the checkpointer's interval and at the end, and on SIGTERM saves and returns
early with ``preempted=True``.

Bit-exact resumes need the data position saved with each checkpoint to be the position
*after* the batches of the steps taken: ``data_state_fn()`` is called right after a step, before
the next batch is drawn.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import numpy as np
from absl import logging

from diffjax.training.checkpoint import Checkpointer
from diffjax.training.state import TrainState
from diffjax.training.step import TrainStep

__all__ = ["train", "TrainResult"]


def __dir__():
    return sorted(__all__)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the final state, its step, whether the run stopped early on SIGTERM
    (after saving) and the last logged metrics as host floats."""

    state: TrainState
    step: int
    preempted: bool
    metrics: dict  # the last logged metrics (host floats)


def _examples_in(batch: Any) -> int:
    """Global examples in a step's batch (host batches are per process)."""
    leaves = [x for x in jax.tree.leaves(batch) if np.ndim(x)]
    if not leaves:
        return 0
    x = leaves[0]
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return int(x.shape[0])
    return int(np.shape(x)[0]) * jax.process_count()


def train(train_step: TrainStep, state: TrainState, batches: Iterable, *, num_steps: int,
          checkpointer: Optional[Checkpointer] = None,
          data_state_fn: Optional[Callable[[], dict]] = None, logdir: Optional[str] = None,
          log_every: int = 100, sync_every: int = 16, handle_sigterm: bool = True,
          progress: Optional[bool] = None, steps_per_call: int = 1,
          callbacks: Sequence[Callable[[int, TrainState, dict], None]] = ()) -> TrainResult:
    """Run ``train_step`` from ``int(state.step)`` up to ``num_steps``.

    Returns a `TrainResult`. Raises ValueError for a bad ``num_steps``, ``sync_every``,
    ``log_every`` or ``steps_per_call`` (naming it).

    Args:
      train_step: from `make_train_step`; ``state`` must already be placed on its mesh.
      state: the initial (or restored) `TrainState`; training resumes from ``int(state.step)``.
      batches: iterator of this process's host batches (one per step).
      num_steps: the step to train up to (an int >= 0; nothing runs if the state is already there).
      checkpointer: saves on its interval, at the end and on SIGTERM (optional).
      data_state_fn: the data iterator's position as a JSON-able dict (saved with checkpoints).
      logdir: TensorBoard event files go here (process 0 only).
      log_every: steps between logs (each log blocks on the metrics).
      sync_every: steps between blocking on a result (at most 16).
      handle_sigterm: install the checkpointer's SIGTERM handler for the run (one process;
        a multi-process run relies on ``jax.distributed``'s preemption service, which stops
        every host at the same step, whichever host the signal reached).
      progress: a tqdm progress bar on stderr: None (default) shows it only when stderr is a
        terminal (otherwise the periodic log lines are the progress report), True always,
        False never. Only process 0 shows one.
      callbacks: ``fn(step, state, metrics)`` after each logged step (metrics as floats).
      steps_per_call: steps run in one compiled call (`TrainStep.run_steps`; faster on CPU,
        where each call allocates the step's temporaries afresh). Calls end at multiples of
        ``steps_per_call``, ``log_every`` and the checkpoint interval, and at ``num_steps``,
        so logs, checkpoints and resumes happen at the same steps (choose it to divide
        them: each other call length compiles once more).
    """
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
    if not 1 <= sync_every <= 16:
        raise ValueError(f"sync_every must be in [1, 16], got {sync_every!r}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every!r}")
    if not isinstance(steps_per_call, int) or steps_per_call < 1:
        raise ValueError(f"steps_per_call must be an int >= 1, got {steps_per_call!r}")
    # calls end at multiples of these (and at num_steps)
    periods = (steps_per_call, log_every) + (
        (checkpointer.save_interval_steps,) if checkpointer is not None else ())
    if data_state_fn is None and hasattr(batches, "get_state"):
        data_state_fn = batches.get_state
    lead = jax.process_index() == 0
    writer = None
    if logdir is not None and lead:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(logdir)
    if checkpointer is not None and handle_sigterm:
        checkpointer.install_sigterm_handler()
    bar = None
    step = int(state.step)
    if progress is None:
        progress = _is_terminal(sys.stderr)
    if progress and lead:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_steps, initial=step, desc="train", dynamic_ncols=True)

    iterator = iter(batches)
    metrics, host_metrics = {}, {}
    preempted = False
    start, skipped_last = step, float(state.skipped)
    t_last, step_last, examples = time.perf_counter(), step, 0
    try:
        while step < num_steps:
            count = min([num_steps - step] + [n - step % n for n in periods])
            if steps_per_call == 1:
                batch = next(iterator)
                examples += _examples_in(batch)
                state, metrics = train_step(state, batch)
            else:
                chunk = [next(iterator) for _ in range(count)]
                examples += sum(_examples_in(b) for b in chunk)
                state, metrics = train_step.run_steps(state, chunk)
                metrics = jax.tree.map(lambda m: m[-1], metrics)
            prev, step = step, step + count
            if prev == start:  # keep compilation out of the throughput figures
                jax.block_until_ready(metrics["loss"])
                now = time.perf_counter()
                logging.info("first step (includes compilation) took %.2f s", now - t_last)
                t_last, step_last, examples = now, step, 0
            if bar is not None:
                bar.update(count)
            if step % log_every == 0 or step == num_steps:
                host_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                now = time.perf_counter()
                rate = (step - step_last) / max(now - t_last, 1e-9)
                host_metrics.update(steps_per_sec=rate,
                                    examples_per_sec=examples / max(now - t_last, 1e-9))
                t_last, step_last, examples = now, step, 0
                if host_metrics["skipped"] > skipped_last:
                    logging.warning("%d non-finite update(s) skipped (total %d)",
                                    host_metrics["skipped"] - skipped_last,
                                    host_metrics["skipped"])
                skipped_last = host_metrics["skipped"]
                logging.info("step %d: %s", step, ", ".join(
                    f"{k}={v:.6g}" for k, v in sorted(host_metrics.items())))
                if bar is not None:
                    bar.set_postfix(loss=f"{host_metrics['loss']:.4g}",
                                    gnorm=f"{host_metrics['grad_norm']:.3g}")
                if writer is not None:
                    for k, v in host_metrics.items():
                        writer.add_scalar(f"train/{k}", v, step)
                for fn in callbacks:
                    fn(step, state, host_metrics)
            elif step // sync_every != prev // sync_every:
                jax.block_until_ready(metrics["loss"])
            if checkpointer is not None:
                preempted = checkpointer.preemption_reached(step, count)
                data_state = data_state_fn() if data_state_fn is not None else None
                checkpointer.maybe_save(step, state, data_state, preempted=preempted)
                if preempted:
                    break
        if checkpointer is not None and not preempted:
            data_state = data_state_fn() if data_state_fn is not None else None
            checkpointer.save(step, state, data_state, force=True)
            checkpointer.wait()
        jax.block_until_ready(state)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        if checkpointer is not None and handle_sigterm:
            checkpointer.uninstall_sigterm_handler()
    if preempted:
        logging.warning("Stopped at step %d after SIGTERM (checkpoint saved).", step)
    return TrainResult(state=state, step=step, preempted=preempted, metrics=host_metrics)
