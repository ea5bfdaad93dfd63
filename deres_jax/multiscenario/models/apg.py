"""APG (Yan et al., NeurIPS 2022, arXiv 2203.16218), scenario-conditioned (group-wise).

  W_s = U S(z_s) V,  S(z_s) = I + Hyper(z_s) ∈ R^{k×k}       (low-rank parameterisation)
  h_{l+1} = ReLU(((h_l U) S(z_s)) V + b_l)                    (decomposed feed-forward, no W_s formed)

U [d_in, k] and V [k, d_out] are shared by all scenarios ("parameter sharing"); only the core
is generated, from z_s = e_s (optionally with sg(mean field embedding): APG's "mix-wise").
Hyper starts at zero, so S = I and every scenario starts from the shared U V; an unseen
scenario keeps S = I. Over-parameterisation (U = U_l U_r) is left out: it is a training
trick that merges away at inference. The output layer is a plain Dense.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs


class APG(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # backbone MLP widths (then a plain logit layer)
  rank: int = 32                # k: size of the generated core S (APG: 32-64)
  scenario_dim: int = 16        # size of the scenario embedding e_s
  hyper_hidden: int = 64        # width of the hyper-network's hidden layer
  condition: str = 'scenario'   # 'scenario' (group-wise) | 'scenario+features' (mix-wise)
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'condition': ('scenario', 'scenario+features')}

  def check(self) -> None:
    if not self.hidden:
      raise ValueError('hidden must name at least one width, e.g. (256, 128).')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    z = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    if self.condition == 'scenario+features':
      z = jnp.concatenate([z, jax.lax.stop_gradient(
          x.reshape(x.shape[0], -1, self.embed_dim).mean(1))], -1)
    h_z = nn.relu(nn.Dense(self.hyper_hidden, name='scenario_hyper')(z))
    k, h = self.rank, x
    for i, width in enumerate(self.hidden):
      u = self.param(f'u_{i}', nn.initializers.lecun_normal(), (h.shape[-1], k))
      v = self.param(f'v_{i}', nn.initializers.lecun_normal(), (k, width))
      b = self.param(f'bias_{i}', nn.initializers.zeros, (width,))
      core = nn.Dense(k * k, kernel_init=nn.initializers.zeros, name=f'scenario_core_{i}')(h_z)
      core = jnp.eye(k) + core.reshape(-1, k, k) * known[:, None, None]
      hu = jnp.einsum('bk,bkm->bm', h @ u.astype(self.dtype), core.astype(self.dtype))
      h = nn.relu(hu @ v.astype(self.dtype) + b)
    logit = nn.Dense(1, dtype=self.dtype, name='logit')(h)[:, 0]
    return logit.astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden]
    k = self.rank
    n = sum(2 * a * k + 2 * k * k + 2 * k * b for a, b in zip(d[:-1], d[1:])) + 2 * d[-1]
    # The hyper-network runs per example: its trunk and one k x k core per layer.
    z = self.scenario_dim + (self.embed_dim if self.condition == 'scenario+features' else 0)
    n += 2 * z * self.hyper_hidden + len(self.hidden) * 2 * self.hyper_hidden * k * k
    return {'total': n}
