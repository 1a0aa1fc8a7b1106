"""Exact analytic models for tests: a diagonal Gaussian mixture in closed form (written here,
independently of diffjax). For x_t = a x0 + s eps every marginal is again a mixture, so the
posterior mean E[x0 | x_t] and log p_t are exact; with one component the probability-flow ODE
has the closed-form solution x(t) = a(t) mu + (x(T) - a(T) mu) sqrt((a(t)^2 v + s(t)^2) / (a(T)^2 v + s(T)^2)).
"""
import jax
import jax.numpy as jnp
import numpy as np


class Mixture:
    def __init__(self, weights, means, variances):
        self.w = np.asarray(weights, np.float64)
        self.mu = np.asarray(means, np.float64)
        self.var = np.asarray(variances, np.float64)

    def sample(self, seed, n):
        rng = np.random.default_rng(seed)
        k = rng.choice(len(self.w), size=n, p=self.w)
        return (self.mu[k] + np.sqrt(self.var[k]) * rng.standard_normal((n, self.mu.shape[1]))).astype(np.float32)

    def _logits(self, x, a, s):
        c = a[:, None, None] ** 2 * self.var[None] + s[:, None, None] ** 2
        diff = x[:, None, :] - a[:, None, None] * self.mu[None]
        logn = -0.5 * jnp.sum(diff**2 / c + jnp.log(2 * jnp.pi * c), -1)
        return jnp.log(self.w)[None] + logn, c, diff

    def log_prob(self, x, a, s):
        a = jnp.broadcast_to(jnp.asarray(a, x.dtype), x.shape[:1])
        s = jnp.broadcast_to(jnp.asarray(s, x.dtype), x.shape[:1])
        return jax.nn.logsumexp(self._logits(x, a, s)[0], -1)

    def x0_mean(self, x, a, s):
        logits, c, diff = self._logits(x, a, s)
        r = jax.nn.softmax(logits, -1)
        m = self.mu[None] + a[:, None, None] * self.var[None] / c * diff
        return jnp.sum(r[..., None] * m, 1)

    def model(self, schedule, prediction="eps"):
        """Exact model_fn(x, t) of the given kind (eps / x0 / v / flow)."""
        def fn(x, t):
            t = jnp.broadcast_to(t, x.shape[:1]).astype(jnp.float32)
            a, s, da, ds = schedule.coefficients(t)
            x0 = self.x0_mean(x.astype(jnp.float32), a, s)
            eps = (x - a[:, None] * x0) / s[:, None]
            out = {"x0": x0, "eps": eps, "flow": da[:, None] * x0 + ds[:, None] * eps,
                   "v": a[:, None] * eps - s[:, None] * x0}[prediction]
            return out.astype(x.dtype)
        return fn


def two_bumps():
    return Mixture([0.3, 0.7], [[-1.0, 0.5], [0.8, -0.3]], [[0.05, 0.1], [0.2, 0.08]])


def gaussian():
    return Mixture([1.0], [[0.5, -1.0]], [[0.3, 0.6]])
