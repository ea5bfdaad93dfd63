"""STAR's partitioned normalisation (Sheng et al., CIKM 2021, arXiv 2101.11427, §3.3 "PN").

  PN:  z' = (γ γ_p) (z - μ_p) / sqrt(σ_p² + ε) + (β + β_p)

γ, β are shared by every scenario, γ_p (starts at 1) and β_p (starts at 0) belong to scenario
p. What μ_p, σ_p² are is `mode`:

  'batch'  (the paper's): in training, the mean and (biased) variance over the rows of the
           batch that belong to scenario p, one pair per scenario present; the running
           averages E_p, Var_p of each scenario (`momentum`, kept in the 'batch_stats'
           collection as `mean`, `var` [S + 1, d]) in evaluation. A scenario with no row in a
           batch keeps its running values. Slot S is the shared path: normalised with the
           whole batch's statistics in training (every row counts) and their running average
           in evaluation, for rows of a scenario never seen (id S), which also use γ, β alone.
  'layer'  each example over its own features (LayerNorm statistics) with the scenario's
           γ_p, β_p: no batch statistics, so no state; the earlier default, kept for
           reproducibility. Not the paper's.

Gradients flow through the batch statistics, as in batch normalisation.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

MODES = ('batch', 'layer')


def partitioned_norm(module: nn.Module, x, ids, known, train: bool, mode: str,
                     num_scenarios: int, momentum: float = 0.9, epsilon: float = 1e-5):
  """PN of x [B, d] (scenario ids [B] in [0, S), known [B] 0/1); call inside `module`'s
  compact `__call__`: its parameters are `module`'s gamma, beta, scenario_gamma,
  scenario_beta, and in 'batch' mode its 'batch_stats' are mean and var [S + 1, d]."""
  if mode not in MODES:
    raise ValueError(f'partition_norm={mode!r} is not one of {list(MODES)}.')
  d, s = x.shape[-1], num_scenarios
  gamma = module.param('gamma', nn.initializers.ones, (d,))
  beta = module.param('beta', nn.initializers.zeros, (d,))
  g_s = module.param('scenario_gamma', nn.initializers.ones, (s, d))
  b_s = module.param('scenario_beta', nn.initializers.zeros, (s, d))
  k = known[:, None]
  g = gamma * (1 + (jnp.take(g_s, ids, 0) - 1) * k)     # γ γ_p, γ alone for an unseen scenario
  b = beta + jnp.take(b_s, ids, 0) * k                   # β + β_p
  if mode == 'layer':
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  else:
    mu, var = _scenario_stats(module, x.astype(jnp.float32), ids, known, train, s, momentum)
  return g * (x - mu) / jnp.sqrt(var + epsilon) + b


def _scenario_stats(module, x, ids, known, train, s, momentum):
  """(μ_p, σ_p²) of each row's scenario [B, d]: batch statistics in training (updating the
  running ones), the running ones in evaluation."""
  d = x.shape[-1]
  if not module.is_initializing() and not module.has_variable('batch_stats', 'mean'):
    raise ValueError("partition_norm='batch' normalises with per-scenario statistics: apply the "
                     "model with its variables {'params': ..., 'batch_stats': ...} (the train "
                     "state's 'model_state'), not with the parameters alone.")
  if train and not module.is_initializing() and not module.is_mutable_collection('batch_stats'):
    raise ValueError("partition_norm='batch' updates its running statistics in training: apply "
                     "with mutable=['batch_stats'] (train/step.py ctr_loss does).")
  ra_mean = module.variable('batch_stats', 'mean', lambda: jnp.zeros((s + 1, d), jnp.float32))
  ra_var = module.variable('batch_stats', 'var', lambda: jnp.ones((s + 1, d), jnp.float32))
  slot = jnp.where(known > 0, ids, s)                    # unseen rows: the shared slot S
  if not train:
    return jnp.take(ra_mean.value, slot, 0), jnp.take(ra_var.value, slot, 0)
  # Membership [B, S + 1]: each known row in its scenario's column, every row in column S.
  member = jnp.concatenate([jax.nn.one_hot(ids, s) * known[:, None],
                            jnp.ones((x.shape[0], 1))], -1)
  n = member.sum(0)[:, None]                             # rows per slot [S + 1, 1]
  mean = member.T @ x / jnp.maximum(n, 1)
  var = jnp.maximum(member.T @ (x * x) / jnp.maximum(n, 1) - mean * mean, 0.0)
  if not module.is_initializing():
    present = n > 0                                      # an absent scenario keeps its values
    ra_mean.value = jnp.where(present, momentum * ra_mean.value + (1 - momentum) * mean,
                              ra_mean.value)
    ra_var.value = jnp.where(present, momentum * ra_var.value + (1 - momentum) * var,
                             ra_var.value)
  return jnp.take(mean, slot, 0), jnp.take(var, slot, 0)
