"""experiments.plots: every figure says how many samples it shows."""
import numpy as np
import pytest

from experiments import plots


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions would write, kept open instead (title checks)."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    yield figures
    for fig in figures:
        plots._pyplot().close(fig)


def test_image_grid_title_says_how_many_of_how_many(captured):
    images = np.zeros((150, 8, 8, 1), np.uint8)
    plots.image_grid(images, "unused.png", max_value=16, title="digits step 3")
    plots.image_grid(images[:64], "unused.png", max_value=16)
    first, second = (fig.axes[0] for fig in captured)
    assert first.get_title() == "digits step 3\n100 of 150 samples"
    assert len(first.images) == 1 and first.images[0].get_array().shape == (10 * 9 + 1,) * 2
    assert second.get_title() == "all 64 samples"
    assert plots.shown_label(1, 1) == "all 1 samples" and plots.shown_label(9, 10) == "9 of 10 samples"
    with pytest.raises(ValueError, match="max_images"):
        plots.image_grid(images, "unused.png", max_value=16, max_images=0)


def test_scatter_panels_show_every_point_and_its_count(captured):
    rng = np.random.default_rng(0)
    samples, data = rng.standard_normal((300, 2)), rng.standard_normal((200, 2))
    plots.scatter(samples, data, "unused.png", title="toy")
    fig, = captured
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["data (200)", "samples (300)"] and fig._suptitle.get_text() == "toy"
    assert [len(ax.collections[0].get_offsets()) for ax in fig.axes] == [200, 300]
