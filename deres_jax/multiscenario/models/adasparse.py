"""AdaSparse (Yang et al., CIKM 2022, arXiv 2206.13108): domain-adaptive neuron pruning.

Before every hidden layer a light pruner computes neuron-wise factors from the scenario
embedding and the layer input, and scales the input by them:

  v = W_π [e_s ; h_l] + b_π,      π = β · sigmoid(α v)         ('scaling' / 'fusion')
  'fusion' zeroes factors below ε (the paper's "Fusion"); 'binarization': π = 1[v > 0] with a
  straight-through gradient. α grows with the training step (α_t = 1 + alpha_step · t,
  Scenario-Wise Rec: +1e-4 a step), annealing towards binary factors.
  h_l <- π ⊙ h_l

The paper's sparsity regulariser towards a target ratio is left out.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs


class AdaSparse(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # backbone MLP widths (then a logit layer)
  scenario_dim: int = 16        # size of the scenario embedding e_s
  form: str = 'fusion'          # pruner: 'fusion' | 'scaling' | 'binarization'
  beta: float = 2.0             # β: factor scale (Scenario-Wise Rec: 2)
  epsilon: float = 0.01         # ε: 'fusion' zeroes factors below it
  alpha_step: float = 1e-4      # α grows by this per training step
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'form': ('fusion', 'scaling', 'binarization')}

  def check(self) -> None:
    if self.beta <= 0:
      raise ValueError(f'beta={self.beta} must be positive; Scenario-Wise Rec uses 2.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    e_s = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    alpha = 1.0 + self.alpha_step * batch.get('step', 0)
    h = x
    for i, width in enumerate(self.hidden):
      v = nn.Dense(h.shape[-1], name=f'scenario_pruner_{i}')(
          jnp.concatenate([e_s.astype(h.dtype), h], -1))
      if self.form == 'binarization':
        hard = (v > 0).astype(v.dtype)
        soft = jax.nn.sigmoid(alpha * v)
        pi = soft + jax.lax.stop_gradient(hard - soft)   # straight-through estimator
      else:
        pi = self.beta * jax.nn.sigmoid(alpha * v)
        if self.form == 'fusion':
          pi = jnp.where(pi < self.epsilon, 0.0, pi)
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(h * pi))
    logit = nn.Dense(1, dtype=self.dtype, name='logit')(h)[:, 0]
    return logit.astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1]
    n = sum(2 * a * b for a, b in zip(d[:-1], d[1:]))
    n += sum(2 * (self.scenario_dim + a) * a for a in d[:-2])
    return {'total': n}
