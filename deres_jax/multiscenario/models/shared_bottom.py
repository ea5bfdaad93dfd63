"""Shared-Bottom (Caruana 1997), scenarios as tasks (Scenario-Wise Rec's SharedBottom).

  h = MLP_shared(x)                   (the backbone MLP, widths `hidden`)
  logit = Tower_s(h)                  (one tower per scenario, widths `tower` then 1)

An unseen scenario gets the mean of the S towers (inputs.one_hot).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.towers import MLP, ScenarioTowers


class SharedBottom(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # shared bottom MLP widths
  tower: tuple = (64,)          # hidden widths of each scenario tower (then a logit)
  dtype: Any = jnp.float32      # computation dtype

  def check(self) -> None:
    if not self.hidden:
      raise ValueError('hidden must name at least one width, e.g. (256, 128).')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    h = MLP(tuple(self.hidden), dtype=self.dtype, name='bottom')(x)
    route = inputs.one_hot(ids, known, self.num_scenarios)
    logit = ScenarioTowers(self.num_scenarios, tuple(self.tower) + (1,), self.dtype,
                           name='scenario_towers')(h, route)
    return logit[:, 0].astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden]
    t = [self.hidden[-1], *self.tower, 1]
    n = sum(2 * a * b for a, b in zip(d[:-1], d[1:]))
    n += self.num_scenarios * sum(2 * a * b for a, b in zip(t[:-1], t[1:]))
    return {'total': n}
