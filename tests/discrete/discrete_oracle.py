"""An explicit joint over all K**L token sequences, with exact denoisers by enumeration
(written here, independently of diffjax.discrete).

Masked noise: p(x0_i | x_t) is the posterior over the sequences that agree with the visible
tokens (t does not matter). Uniform noise with keep-probability a: q(x_t | x0) = prod_i
(a [x_t^i = x0^i] + (1 - a) / K), and p(x0_i | x_t) follows from Bayes' rule over all states.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np


class Joint:
    def __init__(self, probs, vocab_size, length):
        self.K, self.L = vocab_size, length
        self.probs = np.asarray(probs, np.float64)
        self.states = np.array(list(itertools.product(range(vocab_size), repeat=length)), np.int32)

    @property
    def entropy(self):
        p = self.probs[self.probs > 0]
        return float(-(p * np.log(p)).sum())

    def nll(self, seqs):
        return -np.log(self.probs[self.index(seqs)])

    def index(self, seqs):
        return (np.asarray(seqs) * self.K ** np.arange(self.L - 1, -1, -1)).sum(-1)

    def sample(self, seed, n):
        return self.states[np.random.default_rng(seed).choice(len(self.probs), size=n, p=self.probs)]

    def histogram(self, seqs):
        counts = np.bincount(self.index(seqs), minlength=len(self.probs))
        return counts / counts.sum()

    def tv(self, seqs, target=None):
        target = self.probs if target is None else target
        return 0.5 * float(np.abs(self.histogram(seqs) - target).sum())

    def marginals(self):
        """(L, K) per-position marginals."""
        return np.stack([np.bincount(self.states[:, i], weights=self.probs, minlength=self.K) for i in range(self.L)])

    def _posterior_marginals(self, log_w):
        post = jax.nn.softmax(jnp.log(jnp.asarray(self.probs, log_w.dtype))[None] + log_w, axis=-1)
        onehot = jax.nn.one_hot(jnp.asarray(self.states), self.K, dtype=log_w.dtype)
        return jnp.log(jnp.maximum(jnp.einsum("bn,nlk->blk", post, onehot), 1e-30))

    def masked_model(self, mask_id):
        states = jnp.asarray(self.states)

        def fn(x_t, t):
            ok = jnp.all((x_t[:, None, :] == states[None]) | (x_t[:, None, :] == mask_id), axis=-1)
            return self._posterior_marginals(jnp.where(ok, 0.0, -jnp.inf).astype(jnp.result_type(float)))

        return fn

    def uniform_model(self, alpha_fn):
        states = jnp.asarray(self.states)

        def fn(x_t, t):
            a = alpha_fn(t)[:, None, None]
            same = (x_t[:, None, :] == states[None]).astype(a.dtype)
            return self._posterior_marginals(jnp.sum(jnp.log(a * same + (1 - a) / self.K), axis=-1))

        return fn

    def product_model(self, alpha_fn=None):
        """A deliberately wrong model that treats the positions as independent: p(x0_i | x_t) is
        the marginal of position i given x_t^i alone (uniform noise with keep-probability
        alpha_fn(t)), or ignoring x_t (masked noise, alpha_fn=None)."""
        logm = jnp.log(jnp.asarray(self.marginals()))
        K = self.K

        def fn(x_t, t):
            out = jnp.broadcast_to(logm.astype(jnp.result_type(float)), x_t.shape + (K,))
            if alpha_fn is None:
                return out
            a = alpha_fn(t)[:, None, None]
            return jax.nn.log_softmax(out + jnp.log(a * (x_t[..., None] == jnp.arange(K)) + (1 - a) / K), axis=-1)

        return fn


def markov(vocab_size=3, length=4, seed=0, concentration=0.5):
    """A joint with real dependencies between positions: a random first-order Markov chain."""
    rng = np.random.default_rng(seed)
    init = rng.dirichlet(np.ones(vocab_size))
    trans = rng.dirichlet(np.full(vocab_size, concentration), size=vocab_size)
    states = np.array(list(itertools.product(range(vocab_size), repeat=length)))
    p = init[states[:, 0]]
    for i in range(1, length):
        p = p * trans[states[:, i - 1], states[:, i]]
    return Joint(p / p.sum(), vocab_size, length)
