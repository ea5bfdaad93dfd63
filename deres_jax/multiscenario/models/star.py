"""STAR (Sheng et al., CIKM 2021, arXiv 2101.11427): star-topology FCN, partitioned
normalisation and an auxiliary network.

  W*_s = W ⊙ W_s,  b*_s = b + b_s                        (every FCN layer; W_s starts at 1, b_s at 0)
  PN:  z' = (γ γ_s) (z - μ) / sqrt(σ² + ε) + (β + β_s)   (on the input x)
  logit = FCN*_s(PN(x)) + AuxNet([e_s ; x])

Partitioned normalisation: the train state here holds no moving statistics, so
`partition_norm='layer'` normalises each example over its features (LayerNorm statistics)
with scenario-specific scale and shift; the paper uses per-scenario batch statistics
(Scenario-Wise Rec's code uses whole-batch ones, research/midpg.md §2). An unseen scenario
uses W, b, γ, β alone (W_s = 1, b_s = γ_s - 1 = β_s = 0).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.towers import MLP


class STAR(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # star-topology FCN widths (then a logit layer)
  partition_norm: str = 'layer'  # 'layer' (per-example stats, scenario γ_s, β_s; see docstring) | 'none'
  aux_net: bool = True          # add the auxiliary network's logit from [e_s ; x]
  aux_hidden: tuple = (32,)     # auxiliary network widths
  scenario_dim: int = 16        # size of the scenario embedding e_s of the auxiliary network
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'partition_norm': ('layer', 'none')}

  def check(self) -> None:
    if not self.hidden:
      raise ValueError('hidden must name at least one width, e.g. (256, 128).')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    k = known[:, None]
    s = self.num_scenarios
    h = x
    if self.partition_norm == 'layer':
      d = x.shape[-1]
      mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
      gamma = self.param('gamma', nn.initializers.ones, (d,))
      beta = self.param('beta', nn.initializers.zeros, (d,))
      g_s = self.param('scenario_gamma', nn.initializers.ones, (s, d))
      b_s = self.param('scenario_beta', nn.initializers.zeros, (s, d))
      g = gamma * (1 + (jnp.take(g_s, ids, 0) - 1) * k)
      h = g * (x - mu) / jnp.sqrt(var + 1e-5) + beta + jnp.take(b_s, ids, 0) * k
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
    return {'total': n}
