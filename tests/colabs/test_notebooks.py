"""Execute colabs/quickstart.ipynb headless (nbclient) at its test size (DIFFJAX_NOTEBOOK_FAST=1)."""
import re

from notebook_helpers import count_images, run_notebook


def test_quickstart_runs_headless(monkeypatch, tmp_path):
    nb, text = run_notebook("quickstart.ipynb", monkeypatch, tmp_path)
    assert "300 training steps" in text
    assert count_images(nb) == 3  # data, samples vs data, trajectories

    sw = float(re.search(r"sliced W1 / data std = ([0-9.]+)", text).group(1))
    exact = float(re.search(r"NLL \(exact divergence\)\s+= ([-0-9.]+) nats", text).group(1))
    hutch = float(re.search(r"NLL \(Hutchinson, 1 probe\)\s+= ([-0-9.]+) nats", text).group(1))
    # Even a short run is far better than the untrained model, which outputs 0 (v = 0, a
    # collapsed sampler: SW/std ~ 0.8) -- and its NLL cannot beat the true entropy log 8 by more
    # than the Monte Carlo error of 500 test points (~0.03 nats) plus the solver tolerance.
    assert sw < 0.3, sw
    assert 2.079 - 0.15 < exact < 4.0, exact
    share, exact_share = map(float, re.search(
        r"on the squares: ([0-9.]+) of the samples \(exact samples: ([0-9.]+)\)", text).groups())
    assert exact_share == 1.0 and 0.5 < share <= 1.0, (share, exact_share)
    assert abs(hutch - exact) < 0.3, (hutch, exact)


def test_install_cells_name_the_repository_of_pyproject():
    """The repository URL is declared once, in pyproject.toml; every notebook installs from it."""
    import glob
    import os
    import tomllib

    import nbformat
    from notebook_helpers import REPO

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Repository"]
    paths = sorted(glob.glob(os.path.join(REPO, "colabs", "*.ipynb")))
    assert len(paths) >= 4
    for path in paths:
        cell = nbformat.read(path, as_version=4).cells[1]
        assert f'REPOSITORY = "{url}"' in cell.source, path
        assert 'f"diffjax[train,data] @ {SOURCE}"' in cell.source, path
