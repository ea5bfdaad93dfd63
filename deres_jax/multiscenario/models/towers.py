"""Backbone pieces shared by the multi-scenario models: a ReLU MLP, stacked MLPs, towers.

`StackedMLP` holds N MLPs as stacked weights [N, d_in, d_out] and runs all of them on every
example ('bni,nij->bnj'): experts, or one tower per scenario. S and the expert counts are
small (2-10), so running all and mixing is cheaper than gathering per-example weights.
`ScenarioTowers` mixes the S tower outputs with `inputs.one_hot` routing weights: the
example's own tower, or the mean of the towers for a scenario never seen in training.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """x -> ReLU(Dense) per width; the last layer is linear if `final_linear`."""
  widths: tuple                # output width of each layer
  final_linear: bool = False   # no ReLU after the last layer (a logit head)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, d_in]
    for i, w in enumerate(self.widths):
      x = nn.Dense(w, dtype=self.dtype, name=f'dense_{i}')(x)
      if not (self.final_linear and i == len(self.widths) - 1):
        x = nn.relu(x)
    return x


class StackedMLP(nn.Module):
  """N MLPs with stacked weights: x [B, d_in] or [B, N, d_in] -> [B, N, widths[-1]]."""
  num: int                     # N
  widths: tuple                # widths of every MLP
  final_linear: bool = False   # no ReLU after the last layer
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = x if x.ndim == 3 else jnp.broadcast_to(x[:, None], (x.shape[0], self.num, x.shape[-1]))
    for i, w in enumerate(self.widths):
      kernel = self.param(f'kernel_{i}', nn.initializers.lecun_normal(batch_axis=(0,)),
                          (self.num, h.shape[-1], w))
      bias = self.param(f'bias_{i}', nn.initializers.zeros, (self.num, w))
      h = jnp.einsum('bni,nij->bnj', h, kernel.astype(self.dtype)) + bias.astype(self.dtype)
      if not (self.final_linear and i == len(self.widths) - 1):
        h = nn.relu(h)
    return h


class ScenarioTowers(nn.Module):
  """S stacked MLP towers ending in a linear layer; returns the routed output [B, widths[-1]]."""
  num_scenarios: int           # S
  widths: tuple                # tower widths, e.g. (64, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, route):  # x [B, d_in] or [B, S, d_in]; route [B, S]
    h = StackedMLP(self.num_scenarios, self.widths, True, self.dtype, name='stack')(x)
    return jnp.einsum('bsj,bs->bj', h, route.astype(h.dtype))
