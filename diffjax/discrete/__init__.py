"""Discrete diffusion: masked (absorbing) and uniform (multinomial) processes, their ELBOs,
samplers, classifier-free guidance on logits, and spell checking.

Time runs from t = 0 (data) to t = 1 (noise); ``alpha(t)`` is the probability that a token is
untouched. ``model_fn(x_t, t) -> logits (B, L, vocab_size)`` of ``p(x0_i | x_t)``.

    proc = diffjax.discrete.masked(vocab_size=27)             # mask_id == 27
    loss = proc.nelbo(model_fn, x0, key).mean()              # continuous-time bound, nats/seq
    ar = diffjax.discrete.masked(vocab_size=27, order="left_to_right")  # autoregression
    nll = ar.nll(model_fn, x0)                               # exact, nats/seq
    toks, info = diffjax.discrete.sample(model_fn, key, (8, 256), process=proc, steps=256,
                                         method="first_hitting")

``METHODS`` lists the sampling methods ``sample`` accepts (``method=``), ``ORDERS`` the unmasking
orders of the masked process (``masked(..., order=...)``).
"""
from diffjax.discrete import draws, elbo, schedules
from diffjax.discrete._numerics import mask_value
from diffjax.discrete.draws import adjust_log_probs, apply_temperature, categorical, top_p_filter
from diffjax.discrete.elbo import (continuous_nelbo, discrete_nelbo, fixed_order_nelbo, fixed_order_nll, hybrid_loss,
                                   stratified_uniform)
from diffjax.discrete.guidance import classifier_free, classifier_free_batched, guide_logits
from diffjax.discrete.processes import ORDERS, DiscreteProcess, MaskedProcess, UniformProcess, masked, subs, uniform
from diffjax.discrete.sampling import METHODS, sample, sample_confidence, sample_first_hitting, sample_left_to_right
from diffjax.discrete.spelling import character_error_rate, corrupt, restore

__all__ = [
    "masked", "uniform", "MaskedProcess", "UniformProcess", "DiscreteProcess", "schedules", "subs", "ORDERS",
    "continuous_nelbo", "discrete_nelbo", "hybrid_loss", "stratified_uniform", "elbo",
    "fixed_order_nll", "fixed_order_nelbo",
    "sample", "sample_first_hitting", "sample_confidence", "sample_left_to_right", "METHODS",
    "draws", "categorical", "apply_temperature", "top_p_filter", "adjust_log_probs", "mask_value",
    "classifier_free", "classifier_free_batched", "guide_logits",
    "corrupt", "restore", "character_error_rate",
]


def __dir__():
    return sorted(__all__)
