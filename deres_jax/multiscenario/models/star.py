"""STAR (Sheng et al., CIKM 2021, arXiv 2101.11427): star-topology FCN, partitioned
normalisation and an auxiliary network.

  W*_s = W ⊙ W_s,  b*_s = b + b_s                          (every FCN layer; W_s starts at 1, b_s at 0)
  PN:  z' = (γ γ_s) (z - μ_s) / sqrt(σ_s² + ε) + (β + β_s)  (on the input x; models/norm.py)
  logit = FCN*_s(PN(x)) + AuxNet([e_s ; x])

Partitioned normalisation (`partition_norm`): 'batch' is the paper's: μ_s, σ_s² are the
statistics of scenario s's rows in the training batch and their running averages (one pair
per scenario, the 'batch_stats' collection, carried by the train state and the checkpoint) in
evaluation. 'layer' (the default, kept for reproducibility of earlier runs) normalises each
example over its own features with the scenario's γ_s, β_s; Scenario-Wise Rec's code uses
whole-batch statistics (research/midpg.md §2). An unseen scenario uses W, b, γ, β alone
(W_s = 1, b_s = γ_s - 1 = β_s = 0) and, with 'batch', the whole batch's statistics.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models import norm
from deres_jax.multiscenario.models.towers import MLP


class STAR(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # star-topology FCN widths (then a logit layer)
  partition_norm: str = 'layer'  # 'batch' (the paper's: per-scenario batch stats) | 'layer' (per-example) | 'none'
  norm_momentum: float = 0.9    # 'batch': E_s <- m E_s + (1 - m) μ_s per step (PyTorch's BN default)
  aux_net: bool = True          # add the auxiliary network's logit from [e_s ; x]
  aux_hidden: tuple = (32,)     # auxiliary network widths
  scenario_dim: int = 16        # size of the scenario embedding e_s of the auxiliary network
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'partition_norm': norm.MODES + ('none',)}

  def check(self) -> None:
    if not self.hidden:
      raise ValueError('hidden must name at least one width, e.g. (256, 128).')
    if not 0.0 <= self.norm_momentum < 1.0:
      raise ValueError(f'norm_momentum={self.norm_momentum} must lie in [0, 1) (0.9: running '
                       'statistics over about 10 steps).')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    k = known[:, None]
    s = self.num_scenarios
    h = x
    if self.partition_norm != 'none':
      h = norm.partitioned_norm(self, x, ids, known, train, self.partition_norm, s,
                                self.norm_momentum)
    widths = tuple(self.hidden) + (1,)
    for i, width in enumerate(widths):
      w = self.param(f'kernel_{i}', nn.initializers.lecun_normal(), (h.shape[-1], width))
      b = self.param(f'bias_{i}', nn.initializers.zeros, (width,))
      w_s = self.param(f'scenario_kernel_{i}', nn.initializers.ones, (s, h.shape[-1], width))
      b_s = self.param(f'scenario_bias_{i}', nn.initializers.zeros, (s, width))
      # All S specialised layers on every example, then the example's own (shared W if unseen).
      y_all = jnp.einsum('bi,sij->bsj', h, (w[None] * w_s).astype(self.dtype))
      y_own = jnp.einsum('bsj,bs->bj', y_all, inputs.one_hot(ids, known, s))
      y = jnp.where(k > 0, y_own + jnp.take(b_s, ids, 0), h @ w.astype(self.dtype)) + b
      h = y if i == len(widths) - 1 else nn.relu(y)
    logit = h[:, 0]
    if self.aux_net:
      e_s = inputs.ScenarioEmbed(s, self.scenario_dim, name='scenario_embed')(ids, known)
      logit = logit + MLP(tuple(self.aux_hidden) + (1,), True, self.dtype, name='aux_net')(
          jnp.concatenate([e_s.astype(x.dtype), x], -1))[:, 0]
    return logit.astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1]
    n = (self.num_scenarios + 1) * sum(2 * a * b for a, b in zip(d[:-1], d[1:]))
    if self.partition_norm == 'batch':  # training: per-scenario sums of x and x² (S + 1 slots)
      n += 2 * 2 * (self.num_scenarios + 1) * d[0]
    return {'total': n}
