"""The digits feature network (trained once, cached, reused, deterministic) and the image
figures of experiments.image_metrics on real digits against degraded ones."""
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax import data as ddata
from experiments import feature_net, image_metrics

STEPS = 120  # a short training: the cache and the figures are the point, not the accuracy


@pytest.fixture(scope="module")
def digits():
    train, test = ddata.get_dataset("digits", "train"), ddata.get_dataset("digits", "test")
    tr, te = train.as_arrays(), test.as_arrays()
    return tr["x"], tr["label"], te["x"], te["label"]


@pytest.fixture(scope="module")
def cached(digits, tmp_path_factory):
    """``(cache dir, spec, the first, training call's network)``."""
    cache = str(tmp_path_factory.mktemp("feature_cache"))
    x, y = digits[:2]
    spec = feature_net.Spec("digits", (8, 8, 1), 10, feature_net.fingerprint(x, y), steps=STEPS)
    return cache, spec, feature_net.load_or_train(spec, lambda: digits, cache_dir=cache)


def test_trains_once_then_loads_the_cache(cached, digits, monkeypatch):
    cache, spec, first = cached
    assert first.trained and os.path.isfile(first.path)
    assert first.path.startswith(os.path.join(cache, "feature_nets", "digits-"))
    assert first.heldout_accuracy > 0.9  # 10 classes: chance is 0.1

    def no_training(*args, **kwargs):
        raise AssertionError("the cached network was retrained")

    monkeypatch.setattr(feature_net, "train", no_training)
    again = feature_net.load_or_train(spec, lambda: no_training(), cache_dir=cache)
    assert not again.trained and again.path == first.path
    assert again.heldout_accuracy == first.heldout_accuracy
    x = digits[2][:37]
    f1, f2 = first.features(x, batch_size=16), again.features(x)
    assert f1.shape == (37, 128) and f1.dtype == np.float32 and again.feature_dim == 128
    np.testing.assert_array_equal(f1, f2)
    assert np.all(f1 >= 0) and f1.std() > 0  # post-ReLU, not dead
    with pytest.raises(ValueError, match=r"x must have shape \(N, 8, 8, 1\)"):
        first.features(np.zeros((2, 28, 28, 1)))
    # Other data or another seed: another cache file.
    assert spec.key() != feature_net.Spec(**{**spec.__dict__, "seed": 1}).key()
    assert feature_net.fingerprint(*digits[:2]) != feature_net.fingerprint(digits[0][1:], digits[1][1:])


def test_training_is_deterministic(cached, digits, tmp_path):
    _, spec, first = cached
    other = feature_net.load_or_train(spec, lambda: digits, cache_dir=str(tmp_path))
    assert other.trained
    np.testing.assert_array_equal(first.features(digits[2]), other.features(digits[2]))


def test_image_quality_on_real_and_degraded_digits(cached, monkeypatch):
    cache, _, _ = cached
    monkeypatch.setitem(feature_net.DEFAULT_STEPS, "digits", STEPS)  # the cached network
    datasets = {s: ddata.get_dataset("digits", s) for s in ("train", "test")}
    held = datasets["test"].postprocess(datasets["test"].as_arrays(200)["x"])  # levels 0..16
    rng = np.random.default_rng(0)
    real = image_metrics.image_quality(held, datasets.__getitem__, seed=3, cache_dir=cache)
    noise = image_metrics.image_quality(rng.integers(0, 17, held.shape).astype(np.uint8),
                                        datasets.__getitem__, seed=3, cache_dir=cache)
    name = "digits_features"
    assert real[f"num_samples_{name}"] == real[f"num_reference_{name}"] == 200
    assert real[f"heldout_accuracy_{name}"] > 0.9
    assert real[f"precision_{name}"] > 0.6 and real[f"recall_{name}"] > 0.6
    assert noise[f"precision_{name}"] < 0.1 and noise[f"recall_{name}"] < 0.1
    assert noise[f"fd_{name}"] > 5 * real[f"fd_{name}"]
    assert noise[f"kid_{name}"] > 10 * max(real[f"kid_{name}"], real[f"kid_std_{name}"])
    assert not any(k.endswith("_inception") for k in real)
    assert image_metrics.image_quality(held[:9], datasets.__getitem__) == {
        "feature_metrics": "skipped: 9 samples < 10"}
    with pytest.raises(ValueError, match="inception_weights.*no such file"):
        image_metrics.image_quality(held, datasets.__getitem__, inception_weights="/no/such.npz")


class _MeanColour(nnx.Module):
    """Stands in for InceptionV3: the mean of each channel."""

    def __call__(self, x):
        return jnp.mean(x, axis=(1, 2))


def test_inception_features_scale_and_repeat_grey_images():
    levels = np.arange(7 * 4 * 4).reshape(7, 4, 4, 1) % 17
    out = image_metrics.inception_features(_MeanColour(), levels, 16, batch_size=3)
    want = levels.reshape(7, -1).mean(1) / 16
    np.testing.assert_allclose(out, np.repeat(want[:, None], 3, 1), rtol=1e-6)


def test_evaluate_refuses_a_missing_inception_file_before_sampling(tmp_path):
    from experiments import common
    from experiments.configs import digits as digits_config
    from experiments.tasks import gaussian

    config = digits_config.get_config()
    config.eval.inception_weights = str(tmp_path / "missing.npz")
    common.save_config(config, str(tmp_path))  # no checkpoint: the check must come first
    with pytest.raises(ValueError, match=r"config.eval.inception_weights / --inception_weights=.*missing.npz"):
        gaussian.GaussianTask().evaluate(str(tmp_path))
    with pytest.raises(ValueError, match="other.npz.*no such file"):
        gaussian.GaussianTask().evaluate(str(tmp_path), inception_weights=str(tmp_path / "other.npz"))
