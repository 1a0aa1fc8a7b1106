"""Execute colabs/few_step.ipynb headless (nbclient) at its test size (DIFFJAX_NOTEBOOK_FAST=1):
a teacher, its consistency distillation, and the student at exactly 1, 2 and 4 network calls
beside the teacher at 50 steps, judged by the digits classifier."""
import re

from notebook_helpers import count_images, run_notebook


def test_few_step_notebook_runs_headless(monkeypatch, tmp_path):
    nb, text = run_notebook("few_step.ipynb", monkeypatch, tmp_path)
    assert "60 teacher steps, 40 distillation steps" in text
    assert len(re.findall(r"^(60|40) steps in [0-9.]+ s; final loss [0-9.]+$", text, re.M)) == 2
    rows = re.findall(r"^(student, \d call\(s\)|teacher, 50 steps \(\d+ calls\)): confident share ([0-9.]+) \(([0-9.]+) of "
                      r"real digits\), class entropy ([0-9.]+) log 10$", text, re.M)
    assert [r[0] for r in rows] == ["student, 1 call(s)", "student, 2 call(s)", "student, 4 call(s)",
                                    "teacher, 50 steps (51 calls)"], text
    for _, share, ratio, entropy in rows:
        assert 0 <= float(share) <= 1 and float(ratio) >= 0 and 0 <= float(entropy) <= 1.0 + 1e-6
    assert count_images(nb) == 1  # the four rows side by side
