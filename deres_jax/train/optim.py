"""Optimizers: one for the dense parameters and one for the embedding tables.

Embedding tables (any parameter named 'embedding') get their own optimizer and learning
rate, as CTR practice wants (OneTrans: Adagrad for sparse embeddings, RMSProp for dense).
"""
import jax
import jax.numpy as jnp
import optax


def rsqrt_schedule(lr: float, warmup_steps: int, hold_steps: int):
  """T5/TIGER's inverse square root: linear warm-up over `warmup_steps`, the constant `lr` until
  step k = max(hold_steps, warmup_steps, 1), then lr * sqrt(k / step) (TIGER: lr 0.01 for the
  first 10k steps, then inverse square root decay)."""
  k = max(hold_steps, warmup_steps, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1.0) / warmup_steps) if warmup_steps else 1.0
    return lr * warm * jnp.sqrt(k / jnp.maximum(step, k))
  return schedule


def _schedule(lr, cfg, num_steps):
  if cfg.schedule == 'rsqrt':
    return rsqrt_schedule(lr, cfg.warmup_steps, cfg.get('hold_steps', 0))
  if cfg.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(cfg.warmup_steps, 1), max(num_steps, 2))
  if cfg.warmup_steps:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, cfg.warmup_steps),
                                 optax.constant_schedule(lr)], [cfg.warmup_steps])
  return lr


def _make(name, lr, weight_decay):
  if name == 'adam':
    if weight_decay:  # torch.optim.Adam's weight_decay: L2 added to the gradient before Adam's
      # moments (coupled; the Scenario-Wise Rec protocol's Adam(lr, weight_decay=1e-5)); 'adamw' decouples it
      return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
    return optax.adam(lr)
  if name == 'adamw':
    return optax.adamw(lr, weight_decay=weight_decay)
  if name == 'adagrad':
    return optax.adagrad(lr)
  if name == 'rmsprop':
    return optax.rmsprop(lr)
  if name == 'sgd':
    return optax.sgd(lr)
  raise ValueError(f'unknown optimizer {name!r}')


def param_labels(params):
  """'embed' for embedding tables, 'dense' for everything else."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 'embed' if any(getattr(k, 'key', None) == 'embedding' for k in path)
      else 'dense', params)


def make_optimizer(optim_config, num_steps: int) -> optax.GradientTransformation:
  """Builds the optax transformation described by `config.optim`."""
  c = optim_config
  dense = _make(c.name, _schedule(c.learning_rate, c, num_steps), c.weight_decay)
  embed = _make(c.embed_name, _schedule(c.embed_learning_rate, c, num_steps), c.weight_decay)
  tx = optax.multi_transform({'dense': dense, 'embed': embed}, param_labels)
  if c.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(c.grad_clip), tx)
  return tx
