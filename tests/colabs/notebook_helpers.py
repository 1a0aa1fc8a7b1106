"""Run a notebook of colabs/ headless (nbclient) at its test size (DIFFJAX_NOTEBOOK_FAST=1).

The notebooks are committed with the outputs of a full-size run; the tests clear them and
execute every cell, the install cell included: it pip-installs diffjax (``DIFFJAX_SOURCE``: a
wheel built from a copy of this checkout) into a scratch folder (``PIP_TARGET``, no
dependencies), while the kernel imports the checkout itself.
"""
import glob
import os
import shutil
import subprocess
import sys

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


_WHEELS = {}


def _checkout_wheel(tmp_path):
    """A wheel of the checkout, built (isolated, no dependencies) from a copy of its sources,
    once per test process (the notebooks of one run install the same checkout)."""
    if _WHEELS.get("path") and os.path.isfile(_WHEELS["path"]):
        return _WHEELS["path"]
    src, out = str(tmp_path / "src"), str(tmp_path / "wheel")
    _source_copy(src)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, src],
                   check=True, env=env)
    (wheel,) = glob.glob(os.path.join(out, "diffjax-*.whl"))
    _WHEELS["path"] = wheel
    return wheel


def _source_copy(dest):
    """The checkout's sources, without its build products or the workdirs of other runs."""
    os.makedirs(dest)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), dest)
    for name in ("diffjax", "experiments"):
        shutil.copytree(os.path.join(REPO, name), os.path.join(dest, name),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run_notebook(name, monkeypatch, tmp_path, *, timeout=240):
    """Executes ``colabs/<name>`` in a fresh kernel (one CPU device, the repository on the path,
    ``tmp_path`` as working directory) with its committed outputs cleared; returns
    ``(notebook, printed text of all code cells)``. Checks that the install cell installed the
    library (and no top-level ``experiments`` package) from the checkout."""
    site = tmp_path / "site"
    monkeypatch.setenv("DIFFJAX_SOURCE", "file://" + _checkout_wheel(tmp_path))
    monkeypatch.setenv("PIP_TARGET", str(site))
    monkeypatch.setenv("PIP_NO_DEPS", "1")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("DIFFJAX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device in the kernel
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nb = nbformat.read(os.path.join(REPO, "colabs", name), as_version=4)
    assert "REPOSITORY = " in nb.cells[1].source, "the first code cell installs diffjax"
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (site / "diffjax" / "__init__.py").is_file(), "the install cell did not install diffjax"
    assert not (site / "experiments").exists(), "the wheel must not install `experiments`"
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    print(text)
    return nb, text


def count_images(nb):
    """Number of PNG outputs of the executed notebook's code cells."""
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))
