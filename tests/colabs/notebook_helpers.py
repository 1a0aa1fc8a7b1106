"""Run a notebook of colabs/ headless (nbclient) at its test size (DIFFJAX_NOTEBOOK_FAST=1)."""
import os

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _text(cell):
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o and "text/plain" in o["data"]:
            out.append(o["data"]["text/plain"])
    return "".join(out)


def run_notebook(name, monkeypatch, tmp_path, *, timeout=240):
    """Executes ``colabs/<name>`` in a fresh kernel (one CPU device, the repository on the path,
    ``tmp_path`` as working directory); returns ``(notebook, printed text of all code cells)``.
    The notebook must be committed without outputs."""
    monkeypatch.setenv("DIFFJAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device in the kernel
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(os.path.join(REPO, "colabs", name), as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook without outputs"
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    print(text)
    return nb, text


def count_images(nb):
    """Number of PNG outputs of the executed notebook's code cells."""
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))
