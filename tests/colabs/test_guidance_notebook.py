"""Execute colabs/guidance.ipynb headless (nbclient) at its test size (DIFFJAX_NOTEBOOK_FAST=1):
guided digits at several scales with one compilation, inpainting that keeps the known half."""
import re

from notebook_helpers import count_images, run_notebook


def test_guidance_notebook_runs_headless(monkeypatch, tmp_path):
    nb, text = run_notebook("guidance.ipynb", monkeypatch, tmp_path)
    assert "60 training steps" in text and "null class 10" in text
    rates = dict(re.findall(r"guidance ([0-9.]+): class match ([0-9.]+)", text))
    assert set(rates) == {"0", "1", "3", "6"} and all(0 <= float(r) <= 1 for r in rates.values())
    assert "1 compilation(s) for 4 scales" in text  # the scale is traced, not baked in
    assert "known pixels exact: True" in text
    acc = dict(re.findall(r"(real|inpainted|top half only) ([0-9.]+)", text))
    assert set(acc) == {"real", "inpainted", "top half only"}
    assert float(acc["real"]) >= 15 / 16  # the SVC recognises real held-out digits
    assert count_images(nb) == 2  # guided samples by scale, inpainting
