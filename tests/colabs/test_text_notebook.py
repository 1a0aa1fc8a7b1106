"""Execute colabs/text_diffusion.ipynb headless (nbclient) at its test size
(DIFFJAX_NOTEBOOK_FAST=1): a tiny masked character model, bits/char, samples, infilling."""
import math
import os
import re

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOK = os.path.join(REPO, "colabs", "text_diffusion.ipynb")


def _text(cell):
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o and "text/plain" in o["data"]:
            out.append(o["data"]["text/plain"])
    return "".join(out)


def test_text_notebook_runs_headless(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFJAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device in the kernel
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook without outputs"
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    print(text)
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
