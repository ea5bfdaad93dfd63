"""SAR-Net (Shen et al., CIKM 2021, "SAR-Net: A Scenario-Aware Ranking Network for
Personalized Fair Recommendation in Hundreds of Travel Scenarios"), on field features.

  a_f   = softmax_f(<W_q e_s, W_k e_f> / sqrt(d))         (scenario-aware attention over fields)
  x'    = (F a ⊙ E) ⊙ γ_s + β_s                            (scenario-specific transformation)
  g_s   = softmax(W_g [e_s ; x'])                          (multi-scenario gate over all experts)
  h     = sum_i g_s,i [Expert^sh_i(x') ; Expert^s_j(x')]_i  (shared + the scenario's own experts)
  logit = w^T [h ; Debias(x)] + b                          (debias expert net: a linear layer)

Reconstruction choices (the Scenario-Wise Rec benchmark's description and its defaults of
8 shared and 2 specific experts, research/midpg.md §2): the paper's attention is over user
behaviour sequences in the target and other scenarios; the data here has no sequences, so
the scenario embedding attends over the F field embeddings instead (the weights are scaled
by F so that uniform attention leaves the embeddings unchanged). An unseen scenario gets
e_s = 0 (uniform attention), γ = 1, β = 0, and no scenario-specific experts in its gate.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.towers import MLP, StackedMLP


class SARNet(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # widths of every expert MLP
  scenario_dim: int = 16        # size of the scenario embedding e_s
  shared_experts: int = 8       # experts shared by all scenarios (Scenario-Wise Rec: 8)
  specific_experts: int = 2     # experts of each scenario (Scenario-Wise Rec: 2)
  debias_dim: int = 16          # width of the debias expert net (Scenario-Wise Rec: 16)
  dtype: Any = jnp.float32      # computation dtype

  def check(self) -> None:
    if not self.hidden or self.shared_experts < 1:
      raise ValueError('SAR-Net needs at least one hidden width and one shared expert.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    b, s, e = x.shape[0], self.num_scenarios, self.embed_dim
    e_s = inputs.ScenarioEmbed(s, self.scenario_dim, name='scenario_embed')(ids, known)
    # Scenario-aware attention over the field tokens (weights x F: uniform = identity).
    tokens = x.reshape(b, -1, e)                                             # [B, F, E]
    q = nn.Dense(e, use_bias=False, name='scenario_query')(e_s)              # [B, E]
    k = nn.Dense(e, use_bias=False, name='key')(tokens)                      # [B, F, E]
    att = jax.nn.softmax(jnp.einsum('be,bfe->bf', q, k) / jnp.sqrt(e), -1)   # [B, F]
    tokens = tokens * (att * tokens.shape[1])[..., None]
    xt = tokens.reshape(b, -1)
    # Scenario-specific linear transformation of the features.
    gamma = self.param('scenario_gamma', nn.initializers.ones, (s, xt.shape[-1]))
    beta = self.param('scenario_beta', nn.initializers.zeros, (s, xt.shape[-1]))
    kn = known[:, None]
    xt = xt * (1 + (jnp.take(gamma, ids, 0) - 1) * kn) + jnp.take(beta, ids, 0) * kn
    # Experts: shared ones and the example's own scenario's (all S computed, the own routed).
    shared = StackedMLP(self.shared_experts, tuple(self.hidden), dtype=self.dtype,
                        name='shared_experts')(xt)                           # [B, n_sh, D]
    own = StackedMLP(s * self.specific_experts, tuple(self.hidden), dtype=self.dtype,
                     name='scenario_experts')(xt).reshape(b, s, self.specific_experts, -1)
    route = jax.nn.one_hot(ids, s) * kn                                      # [B, S]; 0 if unseen
    own = jnp.einsum('bs,bsnd->bnd', route, own)                             # [B, n_sp, D]
    logits_g = nn.Dense(self.shared_experts + self.specific_experts, name='scenario_gate')(
        jnp.concatenate([e_s.astype(xt.dtype), xt], -1))
    # An unseen scenario's gate covers the shared experts only.
    mask = jnp.concatenate([jnp.ones((b, self.shared_experts)),
                            jnp.broadcast_to(kn, (b, self.specific_experts))], -1)
    gate = jax.nn.softmax(jnp.where(mask > 0, logits_g, -1e9), -1)
    h = jnp.einsum('bn,bnd->bd', gate, jnp.concatenate([shared, own], 1))
    debias = nn.Dense(self.debias_dim, dtype=self.dtype, name='debias')(x)
    logit = MLP((1,), True, self.dtype, name='head')(jnp.concatenate([h, debias], -1))[:, 0]
    aux['field_attention'] = att
    return logit.astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden]
    n_exp = self.shared_experts + self.num_scenarios * self.specific_experts
    n = n_exp * sum(2 * p * q for p, q in zip(d[:-1], d[1:]))
    n += 2 * d[0] * (self.embed_dim + self.debias_dim) + 2 * (d[-1] + self.debias_dim)
    return {'total': n}
