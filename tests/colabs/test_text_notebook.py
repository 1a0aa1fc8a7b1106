"""Execute colabs/text_diffusion.ipynb headless (nbclient) at its test size
(DIFFJAX_NOTEBOOK_FAST=1): a tiny masked character model, bits/char, samples, infilling."""
import math
import re

from notebook_helpers import run_notebook


def test_text_notebook_runs_headless(monkeypatch, tmp_path):
    _, text = run_notebook("text_diffusion.ipynb", monkeypatch, tmp_path)
    assert "80 training steps" in text

    bpc = float(re.search(r"held-out bits/char = ([0-9.]+) \+- ([0-9.]+)", text).group(1))
    unigram = float(re.search(r"unigram entropy\s+= ([0-9.]+) bits/char", text).group(1))
    assert abs(unigram - 4.11) < 0.05  # the offline corpus's character entropy
    # Even 80 steps of a tiny model beat the uniform guess log2(27) = 4.75 (it learns the
    # character frequencies first), and no model of this size gets near 2 bits/char.
    assert 2.0 < bpc < math.log2(27) - 0.1, bpc

    calls = {m: int(n)
             for m, n in re.findall(r"(ancestral|first_hitting): (\d+) model calls", text)}
    assert calls["ancestral"] == 4 * 32  # one call per step
    assert 0 < calls["first_hitting"] <= 32  # at most one call per revealed character
    samples = re.findall(r"^    '([ a-z]*)'$", text, flags=re.M)
    assert len(samples) == 8 and all(len(s) == 32 for s in samples)
    assert "kept characters unchanged: True" in text
    filled = re.findall(r"filled:\s+'([ a-z]*)'", text)
    assert len(filled) == 4 and all(len(f) == 32 for f in filled)
