"""Self-conditioning in the models and the objectives (``self_condition=True``).

* The training rule against an independent computation: a deterministic fake model, the loss of
  ``diffjax.losses.denoising_loss`` / ``process.nelbo`` on a hand-written two-pass model_fn
  (zeros first, the stop-gradient x0 estimate / p(x0 | x_t) for the examples drawn with
  probability 1/2), the same loss and gradient; the share of examples given a non-zero input
  is about 1/2; no gradient through the first pass.
* Off = unchanged: a model whose self-conditioning weights are zero, with the other parameters
  of a model built without the option, gives the loss of the plain objective (same keys), and
  the option adds nothing to a model built without it.
* Bad input: the errors name the argument.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax import discrete, losses, schedules
from diffjax.models import MLP, JointUNet, TokenTransformer, UNet
from diffjax.parameterization import to_x0_eps
from diffjax.training.objectives import make_discrete_objective, make_objective
from diffjax.training.objectives.network import SELF_COND_SALT

B, D = 64, 3
SCH = schedules.cosine()


def _perturb(params, seed=0, scale=0.3):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype)
                                     for p, k in zip(leaves, keys)])


class FakeGaussian(nnx.Module):
    """``out = w x + u x_self_cond + c t``; records the self-conditioning input of every call."""

    def __init__(self, calls):
        self.self_condition = True
        self.num_classes = None
        self.w, self.u, self.c = nnx.Param(jnp.asarray(0.7)), nnx.Param(jnp.asarray(0.5)), nnx.Param(jnp.asarray(0.2))
        self._calls = calls

    def __call__(self, x, t, x_self_cond=None, rngs=None):
        jax.debug.callback(lambda v: self._calls.append(np.asarray(v)), x_self_cond, ordered=True)
        return self.w * x + self.u * x_self_cond + self.c * t[:, None]


def _reference_gaussian_loss(params, x0, key, *, stop_gradient=True):
    """The two-pass rule written out by hand on top of diffjax.losses.denoising_loss."""
    w, u, c = params["w"][...], params["u"][...], params["c"][...]
    k_loss = jax.random.split(key, 3)[0]
    k_use, _ = jax.random.split(jax.random.fold_in(key, SELF_COND_SALT))

    def model_fn(x, t):
        first = w * x + c * t[:, None]  # zero self-conditioning input
        a, s = SCH.alpha(t)[:, None], SCH.sigma(t)[:, None]
        est = (x - s * first) / a  # an eps model's x0 estimate
        est = jnp.where(jnp.isfinite(est), est, 0.0)
        if stop_gradient:
            est = jax.lax.stop_gradient(est)
        use = jax.random.bernoulli(k_use, 0.5, (x.shape[0],))
        return w * x + u * jnp.where(use[:, None], est, 0.0) + c * t[:, None]

    per_example, _ = losses.denoising_loss(model_fn, x0, k_loss, schedule=SCH, prediction="eps")
    return jnp.mean(per_example)


def test_gaussian_training_rule_against_an_independent_computation():
    calls = []
    objective, params = make_objective(FakeGaussian(calls), schedule=SCH, prediction="eps",
                                       self_condition=True)
    x0 = jax.random.normal(jax.random.key(0), (B, D))
    shares = []
    for seed in range(6):
        key = jax.random.key_data(jax.random.key(seed))  # the train step hands raw key data
        del calls[:]
        loss, grads = jax.value_and_grad(lambda p: objective.loss_fn(p, {"x": x0}, key)[0])(params)
        jax.effects_barrier()
        ref, ref_grads = jax.value_and_grad(lambda p: _reference_gaussian_loss(p, x0, key))(params)
        np.testing.assert_allclose(loss, ref, rtol=1e-5)
        for name in ("w", "u", "c"):
            np.testing.assert_allclose(grads[name][...], ref_grads[name][...], rtol=1e-4, atol=1e-6)
        # no gradient through the first pass: with it, the gradient of w would differ
        _, leaky = jax.value_and_grad(lambda p: _reference_gaussian_loss(p, x0, key, stop_gradient=False))(params)
        assert not np.allclose(grads["w"][...], leaky["w"][...], rtol=1e-3)
        # the recorded inputs (the value_and_grad trace runs the forward once): zeros, then
        # zeros or the estimate per example
        first, second = calls[-2], calls[-1]
        np.testing.assert_array_equal(first, 0.0)
        given = np.any(second != 0.0, axis=1)
        shares.append(given.mean())
    share = float(np.mean(shares))
    assert 0.4 < share < 0.6, share  # 6 x 64 independent draws with p = 1/2: sd 0.026
    assert 0 < min(shares) and max(shares) < 1  # per example, not per batch


def test_gaussian_off_is_unchanged_and_a_zero_self_cond_weight_gives_the_plain_loss():
    plain = MLP(D, hidden=16, depth=1, time_embed_dim=8, rngs=nnx.Rngs(0))
    sc = MLP(D, hidden=16, depth=1, time_embed_dim=8, self_condition=True, rngs=nnx.Rngs(0))
    obj_plain, p_plain = make_objective(plain, schedule=SCH, prediction="v")
    obj_sc, p_sc = make_objective(sc, schedule=SCH, prediction="v", self_condition=True)
    assert not obj_plain.self_condition and obj_sc.self_condition
    p_plain = _perturb(p_plain)
    # the self-conditioned network with the plain one's weights and zero weights on x_self_cond
    p_sc = jax.tree.map(lambda a: a, p_plain)
    p_sc["proj_in"]["kernel"] = nnx.Param(jnp.concatenate([p_plain["proj_in"]["kernel"][...],
                                                           jnp.zeros((D, 16))], axis=0))
    x0 = jax.random.normal(jax.random.key(0), (B, D))
    key = jax.random.key(5)
    loss_plain = jax.jit(obj_plain.loss_fn)(p_plain, {"x": x0}, key)[0]
    np.testing.assert_allclose(jax.jit(obj_sc.loss_fn)(p_sc, {"x": x0}, key)[0], loss_plain, rtol=1e-6)
    # the plain objective is the documented one (the keys are those without the option)
    per_example, _ = losses.denoising_loss(obj_plain.model_fn(p_plain), x0, jax.random.split(key, 3)[0],
                                           schedule=SCH, prediction="v")
    np.testing.assert_allclose(loss_plain, jnp.mean(per_example), rtol=1e-5)  # jit against eager
    # a model built without the option has the same parameters as before (no extra input)
    assert p_plain["proj_in"]["kernel"].shape == (D, 16)


def test_gaussian_model_fns_of_a_self_conditioned_objective():
    model = MLP(D, hidden=16, depth=1, time_embed_dim=8, num_classes=3, self_condition=True, rngs=nnx.Rngs(0))
    objective, params = make_objective(model, schedule=SCH, prediction="v", self_condition=True, cond_drop=0.1)
    params = _perturb(params, scale=0.3)
    x, t = jax.random.normal(jax.random.key(1), (2, D)), jnp.array([0.3, 0.8])
    p = jax.random.normal(jax.random.key(2), x.shape)
    labels = jnp.array([0, 2])

    @jax.jit
    def outputs(params):
        fn = objective.self_cond_model_fn(params)
        # the two-pass model_fn: the network fed its own x0 estimate of the zero-input pass
        est = to_x0_eps(fn(x, t, jnp.zeros_like(x)), x, t, SCH, "v")[0]
        two_pass = (objective.model_fn(params)(x, t), fn(x, t, est))
        # guidance: both branches see x0_prev (scale 2: uncond + 2 (cond - uncond))
        guided = objective.self_cond_model_fn(params, labels, 2.0)(x, t, p)
        cond = objective.self_cond_model_fn(params, labels)(x, t, p)
        uncond = objective.self_cond_model_fn(params, jnp.full((2,), objective.null_class))(x, t, p)
        return two_pass, (guided, cond, uncond), (fn(x, t, p), fn(x, t, 0 * p))

    (two, ref), (guided, cond, uncond), (with_p, without_p) = outputs(params)
    np.testing.assert_allclose(two, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(guided, uncond + 2.0 * (cond - uncond), rtol=1e-4, atol=1e-5)
    assert not np.allclose(with_p, without_p)  # the input reaches the output


class FakeTokens(nnx.Module):
    """Logits from the tokens and ``x_self_cond`` (B, L, V); records its inputs."""

    def __init__(self, calls, vocab_size=4):
        self.self_condition, self.vocab_size, self.num_extra_tokens = True, vocab_size, 1
        self.num_classes = None
        self.a, self.u = nnx.Param(jnp.asarray(1.3)), nnx.Param(jnp.asarray(0.8))
        self._calls = calls

    def __call__(self, tokens, t, x_self_cond=None, rngs=None):
        jax.debug.callback(lambda v: self._calls.append(np.asarray(v)), x_self_cond, ordered=True)
        base = self.a * jax.nn.one_hot(tokens % self.vocab_size, self.vocab_size) + 0.2 * t[:, None, None]
        return base + self.u * jnp.roll(x_self_cond, 1, axis=-1)


def test_discrete_training_rule_against_an_independent_computation():
    V = 4
    calls = []
    process = discrete.masked(V)
    objective, params = make_discrete_objective(FakeTokens(calls, V), process=process, self_condition=True)
    x0 = jax.random.randint(jax.random.key(0), (B, 6), 0, V)
    key = jax.random.key(3)

    def reference(p, stop_gradient=True):
        a, u = p["a"][...], p["u"][...]
        k_loss = jax.random.split(key)[0]
        k_use, _ = jax.random.split(jax.random.fold_in(key, SELF_COND_SALT))

        def net(x, t, sc):
            return a * jax.nn.one_hot(x % V, V) + 0.2 * t[:, None, None] + u * jnp.roll(sc, 1, axis=-1)

        def model_fn(x, t):
            probs = jnp.exp(process.x0_log_probs(net(x, t, jnp.zeros(x.shape + (V,))), x))
            if stop_gradient:
                probs = jax.lax.stop_gradient(probs)
            use = jax.random.bernoulli(k_use, 0.5, (x.shape[0],))
            return net(x, t, jnp.where(use[:, None, None], probs, 0.0))

        return jnp.sum(process.nelbo(model_fn, x0, k_loss)) / x0.size

    loss, grads = jax.value_and_grad(lambda p: objective.loss_fn(p, {"x": x0}, key)[0])(params)
    jax.effects_barrier()
    ref, ref_grads = jax.value_and_grad(reference)(params)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    np.testing.assert_allclose(grads["a"][...], ref_grads["a"][...], rtol=1e-4)
    np.testing.assert_allclose(grads["u"][...], ref_grads["u"][...], rtol=1e-4)
    _, leaky = jax.value_and_grad(lambda p: reference(p, stop_gradient=False))(params)
    assert not np.allclose(grads["a"][...], leaky["a"][...], rtol=1e-3)
    first, second = calls[-2], calls[-1]
    np.testing.assert_array_equal(first, 0.0)
    given = np.any(second != 0.0, axis=(1, 2))
    assert 0.3 < given.mean() < 0.7  # 64 draws with p = 1/2: sd 0.06
    np.testing.assert_allclose(second[given].sum(-1), 1.0, rtol=1e-5)  # distributions over V


@pytest.mark.parametrize("process", [discrete.masked(5), discrete.uniform(5)], ids=["masked", "uniform"])
def test_discrete_off_is_unchanged_and_a_zero_projection_gives_the_plain_loss_and_samples(process):
    extra = 1 if isinstance(process, discrete.MaskedProcess) else 0
    kw = dict(num_extra_tokens=extra, seq_len=6, dim=16, depth=1, heads=2)
    plain = TokenTransformer(5, **kw, rngs=nnx.Rngs(0))
    sc = TokenTransformer(5, **kw, self_condition=True, rngs=nnx.Rngs(0))
    obj_plain, p_plain = make_discrete_objective(plain, process=process)
    obj_sc, p_sc = make_discrete_objective(sc, process=process, self_condition=True)
    # the projection is built last: every other parameter equals the plain model's
    assert set(p_sc) - set(p_plain) == {"self_cond_proj"}
    for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves({k: v for k, v in p_sc.items()
                                                               if k != "self_cond_proj"})):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p_sc["self_cond_proj"]["kernel"][...], 0.0)
    p_plain = _perturb(p_plain, scale=0.1)
    p_sc = dict(p_plain, self_cond_proj=p_sc["self_cond_proj"])  # zero projection
    tokens = jax.random.randint(jax.random.key(1), (4, 6), 0, 5)
    key = jax.random.key(2)
    np.testing.assert_allclose(jax.jit(obj_sc.loss_fn)(p_sc, {"x": tokens}, key)[0],
                               jax.jit(obj_plain.loss_fn)(p_plain, {"x": tokens}, key)[0], rtol=1e-6)
    a, _ = jax.jit(lambda p: discrete.sample(obj_plain.model_fn(p), jax.random.key(3), (3, 6), process=process,
                                             steps=4))(p_plain)
    b, _ = jax.jit(lambda p: discrete.sample(obj_sc.self_cond_model_fn(p), jax.random.key(3), (3, 6),
                                             process=process, steps=4, self_condition=True))(p_sc)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # with a non-zero projection the previous prediction reaches the logits
    p_on = dict(p_sc, self_cond_proj=_perturb(p_sc["self_cond_proj"]))
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(4), (4, 6, 5)))
    fn = jax.jit(obj_sc.self_cond_model_fn(p_on))
    assert not np.allclose(fn(tokens, jnp.full((4,), 0.5), probs), fn(tokens, jnp.full((4,), 0.5), 0 * probs))


def test_bad_input_names_the_argument():
    unet_kw = dict(image_size=4, ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0)
    plain = UNet(1, **unet_kw, rngs=nnx.Rngs(0))
    sc = UNet(1, **unet_kw, self_condition=True, rngs=nnx.Rngs(0))
    x, t = jnp.zeros((2, 4, 4, 1)), jnp.zeros((2,))
    assert sc.conv_in.in_features == 2 and plain.conv_in.in_features == 1  # x_self_cond: extra channels
    with pytest.raises(ValueError, match="x_self_cond was given but this UNet was built with self_condition=False"):
        plain(x, t, x_self_cond=x)
    with pytest.raises(ValueError, match=r"x_self_cond must have shape \(2, 4, 4, 1\)"):
        sc(x, t, x_self_cond=x[:, :2])
    with pytest.raises(ValueError, match="x_self_cond must be floating-point"):
        sc(x, t, x_self_cond=x.astype(jnp.int32))
    with pytest.raises(ValueError, match="self_condition must be True or False"):
        UNet(1, **unet_kw, self_condition=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="self_condition must be True or False"):
        MLP(2, self_condition="yes", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="JointUNet has no self-conditioning"):
        JointUNet(1, num_classes=3, **unet_kw, self_condition=True, rngs=nnx.Rngs(0))
    tt = TokenTransformer(5, seq_len=6, dim=16, depth=1, heads=2, self_condition=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x_self_cond must have shape \(2, 6, 5\)"):
        tt(jnp.zeros((2, 6), jnp.int32), t, x_self_cond=jnp.zeros((2, 6, 6)))
    with pytest.raises(ValueError, match="causal=True and self_condition=True"):
        TokenTransformer(5, seq_len=6, dim=16, depth=1, heads=2, causal=True, self_condition=True,
                         rngs=nnx.Rngs(0))
    # objectives: the option must match the model
    with pytest.raises(ValueError, match="self_condition=True needs a model built with self_condition=True"):
        make_objective(plain, schedule=SCH, prediction="v", self_condition=True)
    with pytest.raises(ValueError, match="pass self_condition=True to the objective"):
        make_objective(sc, schedule=SCH, prediction="v")
    with pytest.raises(ValueError, match="self_condition must be True or False"):
        make_objective(sc, schedule=SCH, prediction="v", self_condition="on")
    with pytest.raises(ValueError, match="self_condition=True needs a model built with self_condition=True"):
        make_discrete_objective(TokenTransformer(5, seq_len=6, dim=16, depth=1, heads=2, rngs=nnx.Rngs(0)),
                                process=discrete.masked(5), self_condition=True)
    with pytest.raises(ValueError, match="pass self_condition=True to the objective"):
        make_discrete_objective(tt, process=discrete.masked(5))
    objective, params = make_objective(plain, schedule=SCH, prediction="v")
    with pytest.raises(ValueError, match="self_cond_model_fn needs an objective built with self_condition=True"):
        objective.self_cond_model_fn(params)
