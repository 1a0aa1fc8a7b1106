"""Bad input gets a clear error naming the argument (never a silent wrong answer): the samplers
(Gaussian and discrete), the model-shape check, ``check_finite`` and the launchers' flags."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import app, flags

import diffjax as dj
from diffjax import discrete as D

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from experiments import common, sample as sample_launcher, train  # noqa: E402

SCH = dj.schedules.cosine()
KEY = jax.random.PRNGKey(0)
SHAPE = (4, 3)


def zeros_model(x, t):
    return jnp.zeros_like(x)


def _gaussian(**kw):
    args = dict(schedule=SCH, prediction="eps", solver="euler", steps=2)
    args.update(kw)
    model = args.pop("model_fn", zeros_model)
    return lambda: dj.sample(model, KEY, SHAPE, **args)


def _encode(x, **kw):
    return lambda: dj.encode(zeros_model, x, schedule=SCH, prediction="eps", solver="euler", steps=2, **kw)


GAUSSIAN = {
    "int x_init": (_gaussian(x_init=jnp.zeros(SHAPE, jnp.int32)), TypeError, ["x_init", "int32"]),
    "bool x_init": (_gaussian(x_init=jnp.zeros(SHAPE, bool)), TypeError, ["x_init"]),
    "nan x_init": (_gaussian(x_init=jnp.full(SHAPE, jnp.nan)), ValueError, ["x_init", "non-finite"]),
    "inf x_init": (_gaussian(x_init=jnp.zeros(SHAPE).at[1, 2].set(jnp.inf)), ValueError, ["x_init", "1 non-finite"]),
    "x_init shape": (_gaussian(x_init=jnp.zeros((4, 2))), ValueError, ["x_init", "(4, 3)"]),
    "int dtype": (_gaussian(dtype=jnp.int32), TypeError, ["dtype"]),
    "ddim eta nan": (_gaussian(solver="ddim", eta=float("nan")), ValueError, ["eta", "[0, 1]", "nan"]),
    "ddim eta -1": (_gaussian(solver="ddim", eta=-1.0), ValueError, ["eta", "[0, 1]"]),
    "ddim eta 1.5": (_gaussian(solver="ddim", eta=1.5), ValueError, ["eta", "[0, 1]"]),
    "pc snr 0": (_gaussian(solver="pc", snr=0.0), ValueError, ["snr", "(0, inf)"]),
    "pc snr inf": (_gaussian(solver="pc", snr=float("inf")), ValueError, ["snr"]),
    "pc corrector_steps -1": (_gaussian(solver="pc", corrector_steps=-1), ValueError, ["corrector_steps"]),
    "model misuses t": (_gaussian(model_fn=lambda x, t: x * t), ValueError,
                        ["model_fn", "float32[4, 3]", "float32[4]", "(B,)", "t[:, None]"]),
    "model output shape": (_gaussian(model_fn=lambda x, t: x[:, :1]), ValueError,
                           ["model_fn", "shape (4, 1)", "float32[4, 3]"]),
    "model output int": (_gaussian(model_fn=lambda x, t: jnp.zeros(x.shape, jnp.int32)), TypeError,
                         ["model_fn", "int32"]),
    "encode int x": (_encode(jnp.ones(SHAPE, jnp.int32)), TypeError, ["x must", "int32"]),
    "encode nan x": (_encode(jnp.full(SHAPE, jnp.nan)), ValueError, ["x holds"]),
}


@pytest.mark.parametrize("case", sorted(GAUSSIAN))
def test_gaussian_sampling_refuses(case):
    fn, error, words = GAUSSIAN[case]
    with pytest.raises(error) as info:
        fn()
    for w in words:
        assert w in str(info.value), (case, str(info.value))


def test_model_check_chains_the_original_error():
    with pytest.raises(ValueError, match="model_fn failed") as info:
        _gaussian(model_fn=lambda x, t: x * t)()
    assert info.value.__cause__ is not None and "broadcast" in str(info.value.__cause__).lower()


def test_traced_options_and_states_are_not_checked_for_values():
    """Under the user's jit a traced eta / x_init cannot be checked: it runs (NaN in, NaN out)."""
    run = jax.jit(lambda eta, x: dj.sample(zeros_model, KEY, SHAPE, schedule=SCH, prediction="eps",
                                           solver="ddim", steps=2, eta=eta, x_init=x)[0])
    assert np.isnan(np.asarray(run(0.5, jnp.full(SHAPE, jnp.nan)))).all()


def _nan_below(t_bad):
    def model(x, t):
        return jnp.where(t[:, None] < t_bad, jnp.nan, 0.0).astype(x.dtype) * jnp.ones_like(x)
    return model


TS = jnp.linspace(1.0, 0.1, 10)  # steps k: TS[k] -> TS[k + 1]; the model is NaN from t = 0.5 (k = 5)


def test_check_finite_names_the_first_bad_step_and_its_times():
    with pytest.raises(FloatingPointError) as info:
        dj.sample(_nan_below(0.55), KEY, SHAPE, schedule=SCH, prediction="eps", solver="euler", ts=TS,
                  check_finite=True)
    msg = str(info.value)
    assert "step index 5 of 9" in msg and "t=0.5 to t=0.4" in msg, msg
    # the final denoising call (index 9, at t_min) when every step was finite
    with pytest.raises(FloatingPointError, match=r"final denoising call at t_min=0\.1.*step index 9"):
        dj.sample(_nan_below(0.15), KEY, SHAPE, schedule=SCH, prediction="eps", solver="euler", ts=TS,
                  check_finite=True)


def test_check_finite_under_jit_returns_the_step_and_is_off_by_default():
    kw = dict(schedule=SCH, prediction="eps", solver="dpmpp_2m", ts=TS)
    run = jax.jit(lambda key: dj.sample(_nan_below(0.55), key, SHAPE, check_finite=True, **kw)[1]["nonfinite_step"])
    assert int(run(KEY)) == 5
    x, info = dj.sample(_nan_below(0.55), KEY, SHAPE, **kw)  # default: no check, no extra output
    assert "nonfinite_step" not in info and np.isnan(np.asarray(x)).all()
    _, info = dj.sample(zeros_model, KEY, SHAPE, check_finite=True, **kw)
    assert int(info["nonfinite_step"]) == -1


def test_check_finite_in_encode_counts_from_t_min():
    x = jnp.ones(SHAPE)
    with pytest.raises(FloatingPointError, match=r"step index 0 of 9, from t=0\.1 to t=0\.2"):
        dj.encode(_nan_below(0.15), x, schedule=SCH, prediction="eps", solver="euler", ts=TS,
                  check_finite=True)


# ---------------------------------------------------------------------------- discrete
V = 5
MASKED, UNIFORM = D.masked(V), D.uniform(V)


def logits_model(x, t):
    return jnp.zeros(x.shape + (V,))


def _discrete(process=MASKED, model=logits_model, sampler=D.sample, **kw):
    return lambda: sampler(model, KEY, (2, 4), process=process, steps=2, **kw)


DISCRETE = {
    "temperature -1": (_discrete(temperature=-1.0), ["temperature", ">= 0", "-1.0"]),
    "temperature nan": (_discrete(temperature=float("nan")), ["temperature", "nan"]),
    "top_p 0": (_discrete(top_p=0.0), ["top_p", "(0, 1]"]),
    "top_p 1.5": (_discrete(top_p=1.5), ["top_p", "(0, 1]"]),
    "x_init above the mask id": (_discrete(x_init=jnp.full((2, 4), V + 1)), ["x_init", f"0 .. {V}"]),
    "x_init negative (uniform)": (_discrete(UNIFORM, x_init=jnp.full((2, 4), -1)), ["x_init", "-1"]),
    "confidence_noise -1": (_discrete(sampler=D.sample_confidence, confidence_noise=-1.0), ["confidence_noise"]),
    "first_hitting top_p 0": (_discrete(sampler=D.sample_first_hitting, top_p=0.0), ["top_p"]),
    "model misuses t": (_discrete(model=lambda x, t: (x * t)[..., None] * jnp.ones(V)),
                        ["model_fn", "int32[2, 4]", "[2]", "t[:, None]"]),
    "logits of the wrong vocabulary": (_discrete(model=lambda x, t: jnp.zeros(x.shape + (V - 1,))),
                                       ["model_fn", "(2, 4, 5)", "(2, 4, 4)"]),
}


@pytest.mark.parametrize("case", sorted(DISCRETE))
def test_discrete_sampling_refuses(case):
    fn, words = DISCRETE[case]
    with pytest.raises(ValueError) as info:
        fn()
    for w in words:
        assert w in str(info.value), (case, str(info.value))


def test_discrete_greedy_and_the_mask_id_are_allowed():
    x_init = jnp.asarray([[V, 1, V, 4], [0, V, V, V]])
    toks, _ = D.sample(logits_model, KEY, (2, 4), process=MASKED, steps=2, x_init=x_init, temperature=0.0, top_p=1.0)
    toks = np.asarray(toks)
    assert toks[0, 1] == 1 and toks[0, 3] == 4 and toks[1, 0] == 0 and ((toks >= 0) & (toks < V)).all()


def test_confidence_sampler_documents_its_bias():
    doc = D.sampling.__doc__
    assert "over-represented" in doc and "entropy is lower" in doc


def test_sample_help_documents_dtype_times_steps_and_check_finite():
    doc = dj.sample.__doc__
    for word in ("dtype:", "t_min, t_max:", "check_finite:", "dpmpp_2m 25", "ddpm 1000", "pc 500"):
        assert word in doc, word


# ---------------------------------------------------------------------------- launchers
def _train_flags(monkeypatch, *args):
    """``python -m experiments.train args`` parsed on fresh FlagValues (ml_collections reads the
    config overrides from sys.argv)."""
    argv = ["experiments.train", *args]
    monkeypatch.setattr(sys, "argv", argv)
    values = flags.FlagValues()
    train.define_flags(values)
    values(argv)
    return values


LAUNCHER = {
    "config field typo": (("--config=toy", "--config.train.steps=-1"),
                          ["--config.train.steps", "no field 'steps'", "--config.train.num_steps"]),
    "config section typo": (("--config=toy", "--config.trian.num_steps=3"),
                            ["--config.trian.num_steps", "no field 'trian'", "--config.train"]),
    "config field typo, default config": (("--config.train.num_step=2",),
                                          ["--config.train.num_step", "--config.train.num_steps"]),
    "unknown config name": (("--config=digit",), ["--config=digit", "digits", "built-in configs"]),
    "missing config file": (("--config=nope.py",), ["--config=nope.py", "no such config file"]),
    "non-int num_steps": (("--config=toy", "--config.train.num_steps=1.5"), ["--config.train.num_steps"]),
}


@pytest.mark.parametrize("case", sorted(LAUNCHER))
def test_train_flags_refuse(case, monkeypatch):
    args, words = LAUNCHER[case]
    with pytest.raises(flags.Error) as info:
        _train_flags(monkeypatch, *args)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    for w in words:
        assert w in msg, (case, msg)


def test_config_names_resolve_from_any_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert _train_flags(monkeypatch, "--config=digits").config.name == "digits"
    config = _train_flags(monkeypatch, "--config=experiments/configs/toy.py",
                          "--config.train.num_steps=7").config
    assert config.name == "toy" and config.train.num_steps == 7


@pytest.mark.parametrize("field,value", [("num_steps", 0), ("num_steps", -1), ("log_every", 0)])
def test_train_counts_must_be_positive(field, value, monkeypatch):
    config = _train_flags(monkeypatch, "--config=toy", f"--config.train.{field}={value}").config
    with pytest.raises(app.UsageError, match=rf"--config\.train\.{field} must be an int >= 1, got {value}"):
        common.check_train_config(config)


def test_workdir_flags(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(app.UsageError, match="--workdir=.*afile: exists and is not a directory"):
        common.check_workdir(str(afile))
    with pytest.raises(app.UsageError, match="--workdir=.*afile: is not a directory"):
        common.workdir_config(str(afile))
    with pytest.raises(app.UsageError, match="--workdir=.*config.json not found"):
        common.workdir_config(str(tmp_path))


@pytest.mark.parametrize("flag,expected", [
    ("--steps=0", "--steps must be >= 1"), ("--num_samples=0", "--num_samples must be >= 1"),
    ("--batch_size=-2", "--batch_size must be >= 1"), ("--temperature=-1", "--temperature must be >= 0"),
    ("--top_p=2", r"--top_p must be in \[0, 1\]")])
def test_sample_flags_refuse(flag, expected):
    values = flags.FlagValues()
    sample_launcher.define_flags(values)
    with pytest.raises(flags.IllegalFlagValueError, match=expected):
        values(["experiments.sample", "--workdir=/tmp", flag])


def test_config_typo_is_one_line_on_the_command_line():
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "experiments.train", "--config.train.steps=-1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--config.train.steps" in lines[0] and "--config.train.num_steps" in lines[0]
