"""MMoE (Ma et al., KDD 2018), scenarios as tasks.

  e_i = Expert_i(x)                         (i = 1..n, each an MLP of widths `hidden`)
  g_s = softmax(W_{g,s} x)                  (one gate per scenario, [n])
  logit = Tower_s(sum_i g_{s,i} e_i)

Gates and towers are computed for all S scenarios and routed by `inputs.one_hot`.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.towers import ScenarioTowers, StackedMLP


class MMoE(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # widths of every expert MLP
  num_experts: int = 4          # n shared experts
  tower: tuple = (64,)          # hidden widths of each scenario tower
  dtype: Any = jnp.float32      # computation dtype

  def check(self) -> None:
    if not self.hidden:
      raise ValueError('hidden must name at least one width, e.g. (256, 128).')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    experts = StackedMLP(self.num_experts, tuple(self.hidden), dtype=self.dtype,
                         name='experts')(x)                                 # [B, n, D]
    gates = jax.nn.softmax(StackedMLP(self.num_scenarios, (self.num_experts,), True, self.dtype,
                                      name='scenario_gates')(x), -1)       # [B, S, n]
    mixed = jnp.einsum('bsn,bnd->bsd', gates, experts)                     # [B, S, D]
    route = inputs.one_hot(ids, known, self.num_scenarios)
    logit = ScenarioTowers(self.num_scenarios, tuple(self.tower) + (1,), self.dtype,
                           name='scenario_towers')(mixed, route)
    return logit[:, 0].astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden]
    n = self.num_experts * sum(2 * a * b for a, b in zip(d[:-1], d[1:]))
    t = [self.hidden[-1], *self.tower, 1]
    n += self.num_scenarios * (2 * d[0] * self.num_experts +
                               sum(2 * a * b for a, b in zip(t[:-1], t[1:])))
    return {'total': n}
