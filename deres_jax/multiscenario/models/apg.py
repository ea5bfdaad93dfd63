"""APG (Yan et al., NeurIPS 2022, arXiv 2203.16218), scenario-conditioned (group-wise).

  W_s = U S(z_s) V,  S(z_s) = I + Hyper_S(z_s) ∈ R^{k×k}      (§3.2 low-rank parameterisation)
  b_s = b + Hyper_b(z_s)                                       (generated bias, `generate_bias`)
  h_{l+1} = ReLU(((h_l U) S(z_s)) V + b_s)                     (decomposed feed-forward, no W_s formed)
  U = U_l U_r,  V = V_l V_r    (training only)                 (§3.2 over-parameterisation, `overparam`)

U [d_in, k] and V [k, d_out] are shared by all scenarios ("parameter sharing"); only the core
S and the bias offset are generated, from z_s = e_s (optionally with sg(mean field embedding):
APG's "mix-wise"), through one hidden layer h_z = ReLU(W_h z_s). Both generators start at
zero, so S = I, b_s = b and every scenario starts from the shared U V, b; an unseen scenario
keeps S = I, b_s = b. The generated bias is FuxiCTR's `generate_bias` (APG_MLP's default there
replaces the static bias; here it is an offset on a shared b, the same function class).

Over-parameterisation: with `overparam` = P > 0 the trained parameters are U_l [d_in, P],
U_r [P, k], V_l [k, P], V_r [P, d_out] (P >= k, FuxiCTR's check), multiplied once per step
(not per example); `merge_overparam` folds them into U, V for inference, where the model with
`overparam=0` gives the same logits (test_multiscenario_paper_models.py). The output layer is
a plain Dense.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario.models import inputs


class APG(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # backbone MLP widths (then a plain logit layer)
  rank: int = 32                # k: size of the generated core S (APG: 32-64)
  scenario_dim: int = 16        # size of the scenario embedding e_s
  hyper_hidden: int = 64        # width of the hyper-network's hidden layer
  condition: str = 'scenario'   # 'scenario' (group-wise) | 'scenario+features' (mix-wise)
  generate_bias: bool = True    # b_s = b + Hyper_b(z_s) in every generated layer (False: b alone, the earlier form)
  overparam: int = 0            # P: train U = U_l U_r, V = V_l V_r (P >= rank; merged for inference); 0 = off
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'condition': ('scenario', 'scenario+features')}

  def check(self) -> None:
    if not self.hidden:
      raise ValueError('hidden must name at least one width, e.g. (256, 128).')
    if self.overparam and self.overparam < self.rank:
      raise ValueError(f'overparam={self.overparam} must be 0 (off) or at least rank={self.rank}: '
                       'U = U_l U_r with U_l [d_in, P], U_r [P, k] over-parameterises only if P >= k.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    z = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    if self.condition == 'scenario+features':
      z = jnp.concatenate([z, jax.lax.stop_gradient(
          x.reshape(x.shape[0], -1, self.embed_dim).mean(1))], -1)
    h_z = nn.relu(nn.Dense(self.hyper_hidden, name='scenario_hyper')(z))
    h = x
    for i, width in enumerate(self.hidden):
      h = nn.relu(apg_layer(self, i, h, h_z, known, width, self.rank, self.overparam,
                            self.generate_bias, self.dtype))
    logit = nn.Dense(1, dtype=self.dtype, name='logit')(h)[:, 0]
    return logit.astype(jnp.float32), aux

  def for_inference(self, params: dict):
    """(model, params) to serve: with `overparam`, U_l U_r and V_l V_r merged (`merge_overparam`)
    into the model with overparam=0, which gives the same logits with fewer matmuls."""
    if not self.overparam:
      return self, params
    return self.clone(overparam=0), merge_overparam(params, len(self.hidden))

  def flops_per_example(self) -> dict:
    # Inference (merged) cost; over-parameterised training adds U_l U_r, V_l V_r once per step.
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden]
    k = self.rank
    n = sum(2 * a * k + 2 * k * k + 2 * k * b for a, b in zip(d[:-1], d[1:])) + 2 * d[-1]
    # The hyper-network runs per example: its trunk and one k x k core per layer.
    z = self.scenario_dim + (self.embed_dim if self.condition == 'scenario+features' else 0)
    n += 2 * z * self.hyper_hidden + len(self.hidden) * 2 * self.hyper_hidden * k * k
    if self.generate_bias:
      n += sum(2 * self.hyper_hidden * b for b in self.hidden)
    return {'total': n}


def apg_layer(module, i, h, h_z, known, width, rank, overparam, generate_bias, dtype):
  """Generated layer i (pre-activation): ((h U) S(z)) V + b + Hyper_b(z) [B, width]; call inside
  `module`'s compact `__call__` (its parameters u_i / u_l_i, u_r_i, v_i / v_l_i, v_r_i, bias_i
  and the generators scenario_core_i, scenario_bias_gen_i). h_z [B, hyper_hidden]."""
  k, d_in = rank, h.shape[-1]
  if overparam:
    u = (module.param(f'u_l_{i}', nn.initializers.lecun_normal(), (d_in, overparam)) @
         module.param(f'u_r_{i}', nn.initializers.lecun_normal(), (overparam, k)))
    v = (module.param(f'v_l_{i}', nn.initializers.lecun_normal(), (k, overparam)) @
         module.param(f'v_r_{i}', nn.initializers.lecun_normal(), (overparam, width)))
  else:
    u = module.param(f'u_{i}', nn.initializers.lecun_normal(), (d_in, k))
    v = module.param(f'v_{i}', nn.initializers.lecun_normal(), (k, width))
  b = module.param(f'bias_{i}', nn.initializers.zeros, (width,))
  core = nn.Dense(k * k, kernel_init=nn.initializers.zeros, name=f'scenario_core_{i}')(h_z)
  core = jnp.eye(k) + core.reshape(-1, k, k) * known[:, None, None]
  hu = jnp.einsum('bk,bkm->bm', h @ u.astype(dtype), core.astype(dtype))
  out = hu @ v.astype(dtype) + b
  if generate_bias:
    out = out + nn.Dense(width, kernel_init=nn.initializers.zeros,
                         name=f'scenario_bias_gen_{i}')(h_z) * known[:, None]
  return out


def merge_overparam(params: dict, num_layers: int) -> dict:
  """APG parameters trained with `overparam` > 0 -> those of the same model with overparam=0:
  U = U_l U_r, V = V_l V_r per generated layer (inference: no extra matmul, same logits)."""
  p = dict(params)
  for i in range(num_layers):
    p[f'u_{i}'] = p.pop(f'u_l_{i}') @ p.pop(f'u_r_{i}')
    p[f'v_{i}'] = p.pop(f'v_l_{i}') @ p.pop(f'v_r_{i}')
  return p
