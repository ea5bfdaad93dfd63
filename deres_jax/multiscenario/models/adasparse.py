"""AdaSparse (Yang et al., CIKM 2022, arXiv 2206.13108): domain-adaptive neuron pruning.

Before every hidden layer a light pruner computes neuron-wise factors from the scenario
embedding and the layer input, and scales the input by them (§3.2):

  v = W_π [e_s ; h_l] + b_π
  'binarization': π = 1[v > 0] forward, the gradient of sigmoid(α v) (straight-through)
  'scaling':      π = β · sigmoid(v)
  'fusion':       π = β · sigmoid(α v), zeroed where below ε (the paper's default form)
  h_l <- π ⊙ h_l

Annealing: α_t = 1 + (alpha_max - 1) · min(t / T, 1) with T = anneal_steps (0: the run's
training steps, set by multiscenario/family.py), so the factors do approach binary within the
run. Scenario-Wise Rec adds 1e-4 to α per forward pass (evaluation included), which moves α
from 1 to about 1.2 in 2000 steps: nothing in practice.

Sparsity regulariser (§3.4 "flexible sparsity regularisation"; recalled, the paper's text
could not be read here: the form implemented is stated exactly): with r_l the ratio of zero
factors of layer l in the batch and [r_min, r_max] = sparsity_range,

  L_s = λ Σ_l c_l · mean(π_l / β),   c_l = +1 if r_l < r_min, -1 if r_l > r_max, else 0

(β = 1 for 'binarization'; c_l is computed without gradient): an L1 term on the factors that
pushes them down while a layer is less sparse than r_min and up while it is sparser than
r_max. λ = sparsity_weight; 0 adds no term. For 'scaling' no factor is exactly 0 (r_l = 0),
so it is λ · mean(π/β), a plain L1 penalty. Scenario-Wise Rec has no such term.
`aux['metrics']` logs the sparsity, the mean factor and α per training step.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs


class AdaSparse(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # backbone MLP widths (then a logit layer)
  scenario_dim: int = 16        # size of the scenario embedding e_s
  form: str = 'fusion'          # pruner: 'fusion' | 'scaling' | 'binarization'
  beta: float = 2.0             # β: factor scale (Scenario-Wise Rec: 2)
  epsilon: float = 0.01         # ε: 'fusion' zeroes factors below it
  alpha_max: float = 10.0       # α at the end of the annealing (α_t = 1 + (alpha_max - 1) min(t / T, 1))
  anneal_steps: int = 0         # T; 0 = the run's training steps (set by the family); 'scaling' has no α
  sparsity_weight: float = 0.0  # λ of the sparsity regulariser L_s (0 = no term)
  sparsity_range: tuple = (0.2, 0.5)  # [r_min, r_max]: target ratio of zero factors per layer (a choice here)
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'form': ('fusion', 'scaling', 'binarization')}

  def check(self) -> None:
    if self.beta <= 0:
      raise ValueError(f'beta={self.beta} must be positive; Scenario-Wise Rec uses 2.')
    if self.alpha_max < 1:
      raise ValueError(f'alpha_max={self.alpha_max} must be at least 1 (α anneals up from 1).')
    lo, hi = (tuple(self.sparsity_range) + (None, None))[:2]
    if len(self.sparsity_range) != 2 or not 0 <= lo <= hi <= 1:
      raise ValueError(f'sparsity_range={tuple(self.sparsity_range)} must be (r_min, r_max) with '
                       '0 <= r_min <= r_max <= 1.')
    if self.sparsity_weight < 0:
      raise ValueError(f'sparsity_weight={self.sparsity_weight} must be >= 0 (0 = no regulariser).')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    e_s = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    alpha = self.alpha(batch.get('step', 0))
    h, penalty, zeros, means = x, 0.0, [], []
    for i, width in enumerate(self.hidden):
      v = nn.Dense(h.shape[-1], name=f'scenario_pruner_{i}')(
          jnp.concatenate([e_s.astype(h.dtype), h], -1))
      pi = self.factors(v, alpha)
      scale = 1.0 if self.form == 'binarization' else self.beta
      r = jax.lax.stop_gradient((pi == 0).mean())            # the layer's ratio of zero factors
      lo, hi = self.sparsity_range
      sign = jnp.where(r < lo, 1.0, jnp.where(r > hi, -1.0, 0.0))
      penalty = penalty + sign * (pi / scale).mean()
      zeros.append(r)
      means.append(jax.lax.stop_gradient(pi / scale).mean())
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(h * pi))
    if self.sparsity_weight:  # no term at all (not 0 * ...) when it is off
      aux = dict(aux, losses=dict(aux.get('losses', {}), sparsity=self.sparsity_weight * penalty))
    aux = dict(aux, metrics=dict(aux.get('metrics', {}), **{
        'adasparse/sparsity': jnp.mean(jnp.stack(zeros)), 'adasparse/factor_mean':
        jnp.mean(jnp.stack(means)), 'adasparse/alpha': jnp.asarray(alpha, jnp.float32)}))
    logit = nn.Dense(1, dtype=self.dtype, name='logit')(h)[:, 0]
    return logit.astype(jnp.float32), aux

  def alpha(self, step):
    """α_t of the annealing at training step t (1 when anneal_steps is 0: not set by a run)."""
    if not self.anneal_steps:
      return jnp.float32(1.0)
    frac = jnp.minimum(jnp.asarray(step, jnp.float32) / self.anneal_steps, 1.0)
    return 1.0 + (self.alpha_max - 1.0) * frac

  def factors(self, v, alpha):
    """The pruning factors π of pruner outputs v (`form`; see the module docstring)."""
    if self.form == 'binarization':
      hard = (v > 0).astype(v.dtype)
      soft = jax.nn.sigmoid(alpha * v)
      return soft + jax.lax.stop_gradient(hard - soft)      # straight-through estimator
    if self.form == 'scaling':
      return self.beta * jax.nn.sigmoid(v)
    pi = self.beta * jax.nn.sigmoid(alpha * v)
    return jnp.where(pi < self.epsilon, 0.0, pi)

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1]
    n = sum(2 * a * b for a, b in zip(d[:-1], d[1:]))
    n += sum(2 * (self.scenario_dim + a) * a for a in d[:-2])
    return {'total': n}
