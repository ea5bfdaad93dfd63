"""PEPNet (Chang et al., KDD 2023, arXiv 2302.01115): EPNet + PPNet gates (Gate NU).

  GateNU(u) = γ · sigmoid(W_2 ReLU(W_1 u + b_1) + b_2)            (values in (0, γ), γ = 2)
  EPNet:  O_ep = GateNU([e_s ; sg(E)]) ⊙ E                        (E: flat field embeddings)
  PPNet:  H_{l+1} = ReLU((H_l ⊙ GateNU_l([e_s ; sg(O_ep)])) W_l + b_l)

sg = stop-gradient, as in the paper: the gates do not reshape the embeddings they read. The
paper's PPNet prior is user/item/author ids; here the scenario embedding plus sg(O_ep).
aux['gates'] returns every gate for the (0, γ) test.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs


class GateNU(nn.Module):
  """γ · sigmoid(MLP(u)): a [B, features] gate with values in (0, γ)."""
  features: int                 # gate size
  hidden: int = 64              # width of the ReLU layer
  gamma: float = 2.0            # γ: the gate's upper bound (paper: 2)

  @nn.compact
  def __call__(self, u):
    h = nn.relu(nn.Dense(self.hidden, name='dense_0')(u))
    return self.gamma * jax.nn.sigmoid(nn.Dense(self.features, name='dense_1')(h))


class PEPNet(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # backbone MLP widths (then a logit layer)
  scenario_dim: int = 16        # size of the scenario embedding e_s
  gamma: float = 2.0            # Gate NU scale γ (paper: 2)
  gate_hidden: int = 64         # Gate NU hidden width
  epnet: bool = True            # the embedding personalisation gate
  ppnet: bool = True            # the per-layer parameter personalisation gates
  dtype: Any = jnp.float32      # computation dtype

  def check(self) -> None:
    if self.gamma <= 0:
      raise ValueError(f'gamma={self.gamma} must be positive; the paper uses 2.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    e_s = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    gates = []
    if self.epnet:
      g = GateNU(x.shape[-1], self.gate_hidden, self.gamma, name='scenario_epnet')(
          jnp.concatenate([e_s, jax.lax.stop_gradient(x)], -1))
      x = x * g.astype(x.dtype)
      gates.append(g)
    prior = jnp.concatenate([e_s, jax.lax.stop_gradient(x)], -1)
    h = x
    widths = tuple(self.hidden) + (1,)
    for i, width in enumerate(widths):
      if self.ppnet:
        g = GateNU(h.shape[-1], self.gate_hidden, self.gamma, name=f'scenario_ppnet_{i}')(prior)
        h = h * g.astype(h.dtype)
        gates.append(g)
      h = nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(h)
      if i < len(widths) - 1:
        h = nn.relu(h)
    aux['gates'] = gates
    return h[:, 0].astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1]
    n = sum(2 * a * b for a, b in zip(d[:-1], d[1:]))
    u = self.scenario_dim + d[0]
    n += sum(2 * (u * self.gate_hidden + self.gate_hidden * a) for a in [d[0]] + d[:-1])
    return {'total': n}
