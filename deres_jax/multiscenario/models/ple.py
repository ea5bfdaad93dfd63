"""PLE (Tang et al., RecSys 2020): one Customized Gate Control (CGC) level, scenarios as tasks.

  shared experts e^sh_1..n_sh, scenario s's own experts e^s_1..n_sp     (MLPs, widths `hidden`)
  g_s = softmax(W_{g,s} x) over [e^s ; e^sh]                            (n_sp + n_sh)
  logit = Tower_s(sum_i g_{s,i} [e^s ; e^sh]_i)

Only one extraction level (the paper stacks several with a shared gate between levels; at
the depths used here one CGC level is the common multi-scenario setting).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.towers import ScenarioTowers, StackedMLP


class PLE(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # widths of every expert MLP
  shared_experts: int = 2       # n_sh experts shared by all scenarios
  specific_experts: int = 1     # n_sp experts of each scenario
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
    s, n_sp, n_sh = self.num_scenarios, self.specific_experts, self.shared_experts
    shared = StackedMLP(n_sh, tuple(self.hidden), dtype=self.dtype, name='shared_experts')(x)
    own = StackedMLP(s * n_sp, tuple(self.hidden), dtype=self.dtype, name='scenario_experts')(x)
    own = own.reshape(x.shape[0], s, n_sp, -1)                              # [B, S, n_sp, D]
    pool = jnp.concatenate([own, jnp.broadcast_to(shared[:, None], (x.shape[0], s) +
                                                  shared.shape[1:])], 2)    # [B, S, n, D]
    gates = jax.nn.softmax(StackedMLP(s, (n_sp + n_sh,), True, self.dtype,
                                      name='scenario_gates')(x), -1)       # [B, S, n]
    mixed = jnp.einsum('bsn,bsnd->bsd', gates, pool)
    route = inputs.one_hot(ids, known, s)
    logit = ScenarioTowers(s, tuple(self.tower) + (1,), self.dtype, name='scenario_towers')(
        mixed, route)
    return logit[:, 0].astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden]
    n_exp = self.shared_experts + self.num_scenarios * self.specific_experts
    n = n_exp * sum(2 * a * b for a, b in zip(d[:-1], d[1:]))
    t = [self.hidden[-1], *self.tower, 1]
    n += self.num_scenarios * sum(2 * a * b for a, b in zip(t[:-1], t[1:]))
    return {'total': n}
