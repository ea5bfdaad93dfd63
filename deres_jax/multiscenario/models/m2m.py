"""M2M (Zhang et al., WSDM 2022, "Leaving No One Behind"): meta attention over experts and a
meta tower, both with weights generated from the scenario embedding (the meta unit).

  W(s), b(s) = reshape(MLP_W(e_s)), MLP_b(e_s)                    (the meta unit)
  meta attention: a_i = v^T ReLU(W_a(s) e_i + b_a(s)),  h = sum_i softmax(a)_i e_i
  meta tower:     h <- ReLU(W_t(s) h + b_t(s) + h)                 (`meta_layers` residual layers)
  logit = w^T h + b

Experts are MLPs over the features (the paper's Transformer over behaviour sequences is
left out: the data here has no sequences; the task embedding t of the paper is dropped, one
target). The meta unit depends on the scenario only, so W(s) is generated for the S
scenarios once per step and routed, never per example. An unseen scenario uses the mean
of the S generated weights.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.towers import StackedMLP


class M2M(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # widths of every expert MLP (D = hidden[-1])
  num_experts: int = 4          # experts the meta attention mixes
  scenario_dim: int = 16        # size of the scenario embedding e_s
  attn_dim: int = 32            # width of the meta attention's hidden layer
  meta_layers: int = 2          # residual meta-tower layers
  dtype: Any = jnp.float32      # computation dtype

  def check(self) -> None:
    if not self.hidden:
      raise ValueError('hidden must name at least one width, e.g. (256, 128).')

  def _meta(self, name, e_all, shape):
    """The meta unit: S generated tensors [S, *shape] from the scenario table."""
    size = 1
    for n in shape:
      size *= n
    h = nn.relu(nn.Dense(64, name=f'{name}_0')(e_all))
    return nn.Dense(size, kernel_init=nn.initializers.normal(0.01), name=f'{name}_1')(h).reshape(
        (e_all.shape[0],) + shape)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    route = inputs.one_hot(ids, known, self.num_scenarios)                 # [B, S]
    e_all = self.param('scenario_embed', nn.initializers.normal(0.1),
                       (self.num_scenarios, self.scenario_dim))            # [S, e]
    experts = StackedMLP(self.num_experts, tuple(self.hidden), dtype=self.dtype,
                         name='experts')(x)                                # [B, n, D]
    d, a = self.hidden[-1], self.attn_dim
    w_a = jnp.einsum('bs,sij->bij', route, self._meta('scenario_attn_w', e_all, (d, a)))
    b_a = route @ self._meta('scenario_attn_b', e_all, (a,))
    v = self.param('attn_v', nn.initializers.lecun_normal(), (a, 1))
    scores = (nn.relu(jnp.einsum('bnd,bda->bna', experts, w_a) + b_a[:, None]) @ v)[..., 0]
    h = jnp.einsum('bn,bnd->bd', jax.nn.softmax(scores, -1), experts)
    for i in range(self.meta_layers):
      w_t = self._meta(f'scenario_tower_w{i}', e_all, (d, d))              # [S, D, D]
      b_t = route @ self._meta(f'scenario_tower_b{i}', e_all, (d,))
      h = nn.relu(jnp.einsum('bsj,bs->bj', jnp.einsum('bi,sij->bsj', h, w_t), route) + b_t + h)
    logit = nn.Dense(1, dtype=self.dtype, name='logit')(h)[:, 0]
    return logit.astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    dims = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden]
    d = self.hidden[-1]
    n = self.num_experts * (sum(2 * p * q for p, q in zip(dims[:-1], dims[1:])) + 2 * d * self.attn_dim)
    n += self.meta_layers * self.num_scenarios * 2 * d * d + 2 * d
    return {'total': n}
