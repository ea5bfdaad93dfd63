"""MI-DPG's modulated layer: backbone weights W weighted by a generated low-rank matrix.

For a layer W [d_in, d_out] and the scenario-aware code h_z [B, G] of the auxiliary network
(research/midpg.md §1.4, a reconstruction: the paper's equations are not public):

  'elementwise' (default, "modulate the complete parameter space"):
      W_s = W ⊙ M_s,   M_s = 1 + A_sh B_sh^T + A(z) B(z)^T        (A: [d_in, r], B: [d_out, r])
  'core' (APG-style r x r core, scenario-shared U, V; only G is generated):
      W_s = W ⊙ M_s,   M_s = 1 + A_sh B_sh^T + U G(z) V           (G: [r, r])
  'product' (a matrix product instead of ⊙):
      W_s = W (I + P_sh Q_sh^T + P(z) Q(z)^T)                     (P, Q: [d_out, r])

The 1 + ... offset with B_sh = B(z) = G(z) = Q = 0 at initialisation makes the model start as
the plain shared MLP (LoRA-style; A and P start random so B, Q, G receive gradients).
Scenario-specific factors are multiplied by `known`, so an unseen scenario gets W ⊙ M_sh.

Computation. 'factored' never forms a per-example weight matrix:
  x (W ⊙ Σ_k a_k b_k^T) = Σ_k ((x ⊙ a_k) W) ⊙ b_k         (2 B (r_sh + r) d_in d_out FLOPs)
  x (W ⊙ U G V)         = Σ_km G_km ((x ⊙ u_k) W) ⊙ v_m    (2 B r d_in d_out + 2 B r^2 d_out)
  x W (I + P Q^T)       = h + ((h P) Q^T), h = x W         (2 B d_in d_out + 4 B r d_out)
'materialised' forms W_b = W ⊙ M_b [B, d_in, d_out] per example (the reference the tests
compare with; same FLOPs as factored for ⊙ but B d_in d_out memory).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

_ZERO = nn.initializers.zeros


class ModulatedDense(nn.Module):
  """y = x W_s + b; returns (y [B, d_out], generated factors [B, n], candidates [B, C, n] | None).

  `h_cand` [B, C, G] (optional): codes of C candidate scenario-aware inputs (MI-DPG's MI
  negatives); their factors come from the same generator, unmasked, for the critic only.
  """
  features: int                 # d_out
  rank: int = 4                 # r: rank of the scenario-specific factors (core: r x r)
  shared_rank: int = 4          # r_sh: rank of the scenario-shared factors (0 = none)
  form: str = 'elementwise'     # 'elementwise' | 'core' | 'product'
  compute: str = 'factored'     # 'factored' | 'materialised'
  dtype: Any = jnp.float32

  FORMS: ClassVar[tuple] = ('elementwise', 'core', 'product')

  @nn.compact
  def __call__(self, x, h_z, known, h_cand=None):  # x [B, d_in], h_z [B, G], known [B]
    b, d_in, d_out, r = x.shape[0], x.shape[-1], self.features, self.rank
    w = self.param('kernel', nn.initializers.lecun_normal(), (d_in, d_out)).astype(self.dtype)
    bias = self.param('bias', _ZERO, (d_out,)).astype(self.dtype)
    k = known[:, None, None].astype(self.dtype)
    rows = d_out if self.form == 'product' else d_in
    a_sh = self.param('shared_a', nn.initializers.normal(1.0), (self.shared_rank, rows))
    b_sh = self.param('shared_b', _ZERO, (self.shared_rank, d_out))
    if self.form == 'core':  # scenario-shared U, V; the generated r x r core is specific
      u = self.param('core_u', nn.initializers.normal(1.0), (r, d_in)).astype(self.dtype)
      v = self.param('core_v', nn.initializers.normal(r ** -0.5), (r, d_out)).astype(self.dtype)
      core = nn.Dense(r * r, kernel_init=_ZERO, dtype=self.dtype, name='scenario_core')
      g = core(h_z).reshape(b, r, r) * k
      gen = g.reshape(b, -1)
      cand = None if h_cand is None else core(h_cand)
    else:  # generated A(z) [B, r, rows] (random start) and B(z) [B, r, d_out] (zero start)
      gen_a = nn.Dense(r * rows, bias_init=nn.initializers.normal(1.0), dtype=self.dtype,
                       name='scenario_a')
      gen_b = nn.Dense(r * d_out, kernel_init=_ZERO, dtype=self.dtype, name='scenario_b')
      a = gen_a(h_z).reshape(b, r, rows)
      bz = gen_b(h_z).reshape(b, r, d_out) * k
      gen = jnp.concatenate([a.reshape(b, -1), bz.reshape(b, -1)], -1)
      cand = None if h_cand is None else jnp.concatenate([gen_a(h_cand), gen_b(h_cand)], -1)
      # Shared and specific factors stacked: rank r_sh + r, shared ones broadcast over B.
      fa = jnp.concatenate([jnp.broadcast_to(a_sh.astype(self.dtype), (b,) + a_sh.shape), a], 1)
      fb = jnp.concatenate([jnp.broadcast_to(b_sh.astype(self.dtype), (b,) + b_sh.shape), bz], 1)
    if self.compute == 'materialised':  # W_b per example: the reference for the tests
      if self.form == 'core':
        m = 1.0 + a_sh.T @ b_sh + jnp.einsum('ki,bkm,mj->bij', u, g, v)
        w_b = w * m
      elif self.form == 'product':
        w_b = jnp.einsum('ij,bjk->bik', w, jnp.eye(d_out) + jnp.einsum('bki,bkj->bij', fa, fb))
      else:
        w_b = w * (1.0 + jnp.einsum('bki,bkj->bij', fa, fb))
      y = jnp.einsum('bi,bij->bj', x, w_b)
    elif self.form == 'product':
      h = x @ w                                                  # [B, d_out]
      y = h + jnp.einsum('bk,bkj->bj', jnp.einsum('bi,bki->bk', h, fa), fb)
    elif self.form == 'core':
      def mod(f_a):  # (x ⊙ f_a[k]) W for every row k of f_a: [B, K, d_out]
        return jnp.einsum('bi,ki,ij->bkj', x, f_a, w)
      y = x @ w + jnp.einsum('bkj,kj->bj', mod(a_sh.astype(self.dtype)), b_sh.astype(self.dtype))
      y = y + jnp.einsum('bkj,bkm,mj->bj', mod(u), g, v)
    else:
      y = x @ w + jnp.einsum('bkj,bkj->bj', jnp.einsum('bi,bki,ij->bkj', x, fa, w), fb)
    return y + bias, gen, cand
