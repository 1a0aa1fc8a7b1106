"""Mutants: discrete (masked and uniform discrete diffusion, diffjax/discrete and the discrete
training objective)."""
from mutations import Mutant

D = "tests/discrete/"

TESTS = {
    "diffjax/discrete/schedules.py": [D + "test_processes.py"],
    "diffjax/discrete/processes.py": [
        D + "test_processes.py",
        D + "test_elbo.py::test_continuous_integrand_is_the_limit_of_the_step_kl",
    ],
    "diffjax/discrete/elbo.py": [D + "test_elbo.py"],
    "diffjax/discrete/sampling.py": [D + "test_samplers.py"],
    "diffjax/discrete/draws.py": [
        D + "test_draws.py::test_temperature_and_top_p_closed_forms",
        D + "test_draws.py::test_categorical_batches_and_never_draws_impossible_tokens",
        D + "test_draws.py::test_uniform_01_has_full_relative_precision_near_zero",
    ],
    "diffjax/discrete/guidance.py": [D + "test_guidance_spelling.py", D + "test_discrete_guidance_exact.py"],
    "diffjax/training/objectives/discrete.py": ["tests/experiments/test_text_objective.py"],
}

SCH = "diffjax/discrete/schedules.py"
PROC = "diffjax/discrete/processes.py"
ELBO = "diffjax/discrete/elbo.py"
SAMP = "diffjax/discrete/sampling.py"
DRAWS = "diffjax/discrete/draws.py"

MUTANTS = [
    # --- schedules: alpha and its derivative
    Mutant("discrete.schedule_cosine_alpha_unsquared", SCH,
           "math.log(2.0) + 2.0 * jnp.log(jnp.sin(0.25 * math.pi",
           "math.log(2.0) + jnp.log(jnp.sin(0.25 * math.pi"),
    Mutant("discrete.schedule_cosine_dlog1m_factor2", SCH,
           "jnp.maximum(0.5 * math.pi * jnp.cos(u) / jnp.sin(u), 0.0)",
           "jnp.maximum(math.pi * jnp.cos(u) / jnp.sin(u), 0.0)"),
    # --- forward marginals
    Mutant("discrete.masked_marginal_masks_with_alpha", PROC,
           "u < jnp.exp(self.log1m_alpha(t))",
           "u < self.alpha(t)"),
    Mutant("discrete.uniform_marginal_noise_not_over_K", PROC,
           "return jnp.logaddexp(la, l1m - log_k), l1m - log_k",
           "return jnp.logaddexp(la, l1m), l1m - log_k"),
    # --- posteriors q(x_s | x_t, x0)
    Mutant("discrete.masked_posterior_stay_uses_alpha_ratio", PROC,
           "log_stay = jnp.minimum(self.log1m_alpha(s) - self.log1m_alpha(t), 0.0)",
           "log_stay = jnp.minimum(self.log_alpha(t) - self.log_alpha(s), 0.0)"),
    Mutant("discrete.uniform_posterior_step_keep_is_alpha_t", PROC,
           "la_ts = jnp.minimum(self.log_alpha(t) - la_s, 0.0)",
           "la_ts = jnp.minimum(self.log_alpha(t), 0.0)"),
    # --- ELBO weights and terms
    Mutant("discrete.masked_elbo_weight_over_alpha", PROC,
           "w = batch_shape_time(self.schedule.dlog1m_alpha(t), x0.ndim)",
           "w = batch_shape_time(-self.schedule.dlog_alpha(t), x0.ndim)"),
    Mutant("discrete.uniform_elbo_rate_not_over_K", PROC,
           "rate = -self.schedule.dlog_alpha(jnp.where(alive, t, 0.5)) / K",
           "rate = -self.schedule.dlog_alpha(jnp.where(alive, t, 0.5))"),
    Mutant("discrete.discrete_elbo_weight_T_minus_1", ELBO,
           "_per_sequence(T * terms + prior)",
           "_per_sequence((T - 1) * terms + prior)"),
    Mutant("discrete.elbo_time_strata_not_permuted", ELBO,
           "strata = jax.random.permutation(k_perm, n)",
           "strata = jnp.arange(n)"),
    # --- samplers
    Mutant("discrete.ancestral_reveal_prob_is_stay_prob", SAMP,
           "log_reveal, _ = process.reveal_log_prob(s, t)\n        reveal = (x == mask)",
           "_, log_reveal = process.reveal_log_prob(s, t)\n        reveal = (x == mask)"),
    Mutant("discrete.first_hitting_time_ignores_t_start", SAMP,
           "v = uniform_01(k_times, (B, N), c.dtype) * c[0]",
           "v = uniform_01(k_times, (B, N), c.dtype)"),
    Mutant("discrete.first_hitting_model_called_at_s", SAMP,
           "t = ts[jnp.minimum(next_step, steps - 1)]",
           "t = ts[jnp.minimum(next_step + 1, steps)]"),
    Mutant("discrete.confidence_count_rounded", SAMP,
           "target = jnp.floor(total * keep_frac + 1e-4)",
           "target = jnp.round(total * keep_frac + 1e-4)"),
    Mutant("discrete.left_to_right_reversed", SAMP,
           "score = -position[None, :]",
           "score = position[None, :]"),
    # --- temperature and top-p
    Mutant("discrete.temperature_multiplies", DRAWS,
           "scaled = jnp.maximum(logp / safe_T, mask_value(dt))",
           "scaled = jnp.maximum(logp * safe_T, mask_value(dt))"),
    Mutant("discrete.top_p_inclusive_cumsum", DRAWS,
           "before = jnp.cumsum(probs, axis=-1) - probs",
           "before = jnp.cumsum(probs, axis=-1)"),
    # --- classifier-free guidance
    Mutant("discrete.guidance_extrapolates_from_cond", "diffjax/discrete/guidance.py",
           "mixed = jnp.maximum(u + w * (c - u), lo)",
           "mixed = jnp.maximum(c + w * (c - u), lo)"),
    # --- the training objective's time sampling
    Mutant("discrete.objective_times_not_stratified", "diffjax/training/objectives/discrete.py",
           "num_steps=self.num_steps,\n                                  antithetic=self.antithetic, **kw)",
           "num_steps=self.num_steps,\n                                  antithetic=False, **kw)"),
]
