"""Exact check of discrete classifier-free guidance on an enumerable joint (issue 5).

The joint p(x) over all 3**4 sequences is a Markov chain; the condition y is a function of the
first token. The conditional p(x | y) is the joint restricted to (or reweighted by) p(y | x),
so both branches have exact denoisers by enumeration (``discrete_oracle.Joint``, written
independently of diffjax.discrete). ``diffjax.discrete.classifier_free`` at scale 1 must then
sample p(x | y), at scale 0 the marginal p(x) (total variation <= 0.05), with the masked
process (first-hitting and left-to-right samplers) and the uniform process (ancestral), the
scale being a traced value.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax.discrete as dd
from discrete_oracle import Joint, markov

J = markov(vocab_size=3, length=4, seed=0)
N = 40_000


def _reweighted(lik_of_first):
    """The joint times a likelihood of the first token, renormalised: p(x | y)."""
    p = J.probs * lik_of_first[J.states[:, 0]]
    return Joint(p / p.sum(), J.K, J.L)


def _models(cond, process):
    if isinstance(process, dd.MaskedProcess):
        return cond.masked_model(process.mask_id), J.masked_model(process.mask_id)
    return cond.uniform_model(process.alpha), J.uniform_model(process.alpha)


def _draw(cond, process, scale, key, n=N, **kw):
    c, u = _models(cond, process)
    run = jax.jit(lambda k, w: dd.sample(dd.classifier_free(c, u, w), k, (n, J.L),
                                         process=process, **kw)[0])
    return np.asarray(run(key, jnp.float32(scale)))


@pytest.mark.parametrize("process,kw", [
    (dd.masked(3), dict(steps=1024, method="first_hitting")),
    (dd.masked(3), dict(steps=4, method="left_to_right")),
    (dd.uniform(3), dict(steps=32, method="ancestral", n=20_000)),
], ids=["masked-first_hitting", "masked-left_to_right", "uniform-ancestral"])
def test_scale_one_samples_the_conditional_and_zero_the_marginal(process, kw):
    cond = _reweighted(np.array([1.0, 0.0, 0.0]))  # y = "the first token is 0", p(y) = 0.40
    assert 0.3 < J.probs[J.states[:, 0] == 0].sum() < 0.5
    x1 = _draw(cond, process, 1.0, jax.random.PRNGKey(0), **kw)
    x0 = _draw(cond, process, 0.0, jax.random.PRNGKey(1), **kw)
    assert x1.min() >= 0 and x1.max() < 3 and x0.min() >= 0 and x0.max() < 3
    tv_cond, tv_marg = cond.tv(x1), J.tv(x0)
    assert tv_cond <= 0.05 and tv_marg <= 0.05, (tv_cond, tv_marg)
    # and not the other way round: the two targets are far apart
    assert J.tv(x1) > 0.3 and cond.tv(x0) > 0.3


def test_scale_three_raises_the_implicit_classifiers_log_likelihood():
    """A soft condition, p(y | x) = 0.7 if x_0 = 0 else 0.15: at scale 3 the samples' mean
    log p(y | x) rises above its exact value under p(x | y) (scale 1), and the first token
    concentrates on 0; the sequences stay valid."""
    lik = np.array([0.7, 0.15, 0.15])
    cond = _reweighted(lik)
    proc = dd.masked(3)
    kw = dict(steps=4, method="left_to_right")
    exact = float(np.sum(cond.probs * np.log(lik[J.states[:, 0]])))
    x1 = _draw(cond, proc, 1.0, jax.random.PRNGKey(2), **kw)
    x3 = _draw(cond, proc, 3.0, jax.random.PRNGKey(3), **kw)
    ll1, ll3 = np.log(lik[x1[:, 0]]).mean(), np.log(lik[x3[:, 0]]).mean()
    assert abs(ll1 - exact) < 0.02, (ll1, exact)
    assert ll3 > exact + 0.1, (ll3, exact)
    assert (x3[:, 0] == 0).mean() > (x1[:, 0] == 0).mean() + 0.05
    assert J.probs[J.index(x3)].min() > 0  # guidance never produces an impossible sequence
