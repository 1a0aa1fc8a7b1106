"""The training loop's progress report: a tqdm bar on stderr only when stderr is a terminal,
otherwise the periodic log lines alone (a bar written to a file is carriage returns)."""
import io
import logging
import sys

from diffjax import training
from training_helpers import ToyData, setup


class _Terminal(io.StringIO):
    """An in-memory stderr that says it is a terminal."""

    def isatty(self):
        return True


def _run(monkeypatch, stream, num_steps=4, log_every=2, **kwargs):
    """Trains the tiny model with ``stream`` as sys.stderr and the loop's log lines (absl, INFO)
    written to it as well; returns what the stream received."""
    monkeypatch.setattr(sys, "stderr", stream)
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        result = training.train(*setup(training.make_mesh(1)), ToyData(4), num_steps=num_steps,
                                log_every=log_every, handle_sigterm=False, **kwargs)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert result.step == num_steps
    return stream.getvalue()


def test_without_a_terminal_only_log_lines_and_no_carriage_returns(monkeypatch):
    out = _run(monkeypatch, io.StringIO())  # progress=None: decided by stderr.isatty()
    assert "\r" not in out, out
    logged = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in logged] == ["step 2", "step 4"], out
    assert all("loss=" in line and "steps_per_sec=" in line for line in logged), logged


def test_on_a_terminal_the_bar_is_tqdm(monkeypatch):
    out = _run(monkeypatch, _Terminal())
    assert "\r" in out and "train:" in out and "4/4" in out, out
    # the log lines still go out, between the bar's redraws
    assert "step 4:" in out


def test_progress_false_on_a_terminal_and_true_off_one(monkeypatch):
    assert "\r" not in _run(monkeypatch, _Terminal(), progress=False)
    assert "4/4" in _run(monkeypatch, io.StringIO(), progress=True)
