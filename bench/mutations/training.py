"""Mutants: training (the train step, optimizer/EMA, checkpoints, data iterators, sharding,
the Gaussian objective)."""
from mutations import Mutant

STEP = "diffjax/training/step.py"
OPTIM = "diffjax/training/optim.py"
SHARDING = "diffjax/training/sharding.py"
CHECKPOINT = "diffjax/training/checkpoint.py"
LOOP = "diffjax/training/loop.py"
OBJECTIVES = "diffjax/training/objectives/gaussian.py"
NETWORK = "diffjax/training/objectives/network.py"
PIPELINE = "diffjax/data/pipeline.py"

# The fast hand-computed tests first: with -x a mutant usually stops there.
TESTS = {
    STEP: ["tests/training/test_training_update.py", "tests/training/test_training_step.py"],
    OPTIM: ["tests/training/test_training_optim.py", "tests/training/test_training_update.py"],
    SHARDING: ["tests/training/test_training_sharding.py",
               "tests/training/test_training_step.py"],
    # the checkpoint tests (two of them spawn subprocesses) are slow: checkpoint/loop only
    CHECKPOINT: ["tests/training/test_training_checkpoint.py"],
    LOOP: ["tests/training/test_training_checkpoint.py"],
    OBJECTIVES: ["tests/experiments/test_objectives.py"],
    NETWORK: ["tests/experiments/test_objectives.py", "tests/experiments/test_text_objective.py"],
    PIPELINE: ["tests/data/test_data_pipeline.py", "tests/data/test_data_api.py"],
}

MUTANTS = [
    # ---------------------------------------------------------------- the train step
    Mutant("training.step.accum_sums_micro_grads", STEP,
           "grads = jax.tree.map(lambda g: g / num, grads)",
           "grads = jax.tree.map(lambda g: g, grads)"),
    Mutant("training.step.micro_batches_contiguous", STEP,
           "x = x.reshape((b // num, num) + x.shape[1:]).swapaxes(0, 1)",
           "x = x.reshape((num, b // num) + x.shape[1:])"),
    Mutant("training.step.micro_batches_share_key", STEP,
           "grad_fn(params, mb, jax.random.fold_in(key, j))",
           "grad_fn(params, mb, key)"),
    Mutant("training.step.key_folds_applied_updates", STEP,
           "key = jax.random.fold_in(state.rng, state.step)",
           "key = jax.random.fold_in(state.rng, state.step - state.skipped)"),
    Mutant("training.step.ema_of_pre_update_params", STEP,
           "ema = ema_update(state.ema_params, params, decay)",
           "ema = ema_update(state.ema_params, state.params, decay)"),
    Mutant("training.step.ema_decay_of_next_step", STEP,
           "decay = ema_decay_at(state.step, self.ema_decay",
           "decay = ema_decay_at(state.step + 1, self.ema_decay"),
    Mutant("training.step.finite_checks_loss_only", STEP,
           "finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)",
           "finite = jnp.isfinite(loss)"),
    Mutant("training.step.lr_metric_counts_skipped", STEP,
           "self.learning_rate_fn(state.step - state.skipped)",
           "self.learning_rate_fn(state.step)"),
    # ---------------------------------------------------------------- optimizer / schedule
    Mutant("training.optim.warmup_off_by_one", OPTIM,
           "warmup = peak * count / max(warm, 1)",
           "warmup = peak * (count + 1) / max(warm, 1)"),
    Mutant("training.optim.clip_after_adam", OPTIM,
           'optax.chain(optax.clip_by_global_norm(float(c["grad_clip"])), adamw)',
           'optax.chain(adamw, optax.clip_by_global_norm(float(c["grad_clip"])))'),
    Mutant("training.optim.decay_all_ignored", OPTIM,
           'mask=None if c["decay_all"] else _decay_mask',
           "mask=_decay_mask"),
    # ---------------------------------------------------------------- sharding
    Mutant("training.sharding.fsdp_tie_to_last_dim", SHARDING,
           "(best is None or d > shape[best])",
           "(best is None or d >= shape[best])"),
    Mutant("training.sharding.vectors_replicated", SHARDING,
           "P(axis_name) if ndim >= 1 else P()",
           "P(axis_name) if ndim >= 2 else P()"),
    # ---------------------------------------------------------------- checkpoint / loop
    Mutant("training.checkpoint.data_state_not_saved", CHECKPOINT,
           "data=ocp.args.JsonSave(_jsonable({} if data_state is None else dict(data_state))),",
           "data=ocp.args.JsonSave({}),"),
    Mutant("training.loop.calls_cross_save_interval", LOOP,
           "count = min([num_steps - step] + [n - step % n for n in periods])",
           "count = min([num_steps - step] + [n for n in periods])"),
    # ---------------------------------------------------------------- data iterators
    Mutant("training.data.resume_position_not_advanced", PIPELINE,
           "self._epoch, self._position = key[0], key[1] + 1",
           "self._epoch, self._position = key[0], key[1]"),
    Mutant("training.data.augment_rng_ignores_epoch", PIPELINE,
           "batch = augment(batch, [example_rng(seed, epoch, g) for g in positions])",
           "batch = augment(batch, [example_rng(seed, 0, g) for g in positions])"),
    # ---------------------------------------------------------------- Gaussian objective
    Mutant("training.objectives.prediction_fixed_eps", OBJECTIVES,
           "schedule=self.schedule, prediction=self.prediction,\n                    weighting=",
           'schedule=self.schedule, prediction="eps",\n                    weighting='),
    Mutant("training.objectives.weighting_dropped", OBJECTIVES,
           "weighting=self.weighting, importance=self.importance, **kw,",
           'weighting="simple", importance=self.importance, **kw,'),
    Mutant("training.objectives.time_draw_always_antithetic", OBJECTIVES,
           "kw = dict(antithetic=self.antithetic, t_max=self.t_max)",
           "kw = dict(antithetic=True, t_max=self.t_max)"),
    Mutant("training.objectives.masked_mean_over_batch", NETWORK,
           "return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)",
           "return jnp.sum(values * w) / values.shape[0]"),
]
