"""MI-DPG's modulated layer: backbone weights W weighted by a generated low-rank matrix.

For a layer W [d_in, d_out] and the code h of the auxiliary network (research/midpg.md §1.4, a
reconstruction: the paper's equations are not public):

  'elementwise' (default, "modulate the complete parameter space"):
      W_s = W ⊙ M_s,   M_s = 1 + A_sh B_sh^T + A(z) B(z)^T        (A: [d_in, r], B: [d_out, r])
  'core' (APG-style r x r core, scenario-shared U, V; only G is generated):
      W_s = W ⊙ M_s,   M_s = 1 + A_sh B_sh^T + U G(z) V           (G: [r, r])
  'product' (a matrix product instead of ⊙):
      W_s = W (I + P_sh Q_sh^T + P(z) Q(z)^T)                     (P, Q: [d_out, r])

The 1 + ... offset with B_sh = B(z) = G(z) = Q = 0 at initialisation makes the model start as
the plain shared MLP with every W_s equal (LoRA-style; A and P start random so B, Q, G receive
gradients). Scenario-specific factors are multiplied by `known`, so an unseen scenario gets the
shared weighting W_sh (B(z) = G(z) = Q(z) = 0).

Computation (`compute`):
  'per_scenario' (when z depends on the scenario only): the S scenarios' factors once per
      step, W_s for the S scenarios and W_sh, every example through all S + 1 and each keeps its
      own (as STAR does): 2 (S + 1) d_in d_out FLOPs per example, + the weights once per step.
  'factored' (per-example z) never forms a per-example weight matrix:
      x (W ⊙ Σ_k a_k b_k^T) = Σ_k ((x ⊙ a_k) W) ⊙ b_k         (2 (r_sh + r) d_in d_out per example)
      x (W ⊙ U G V)         = Σ_km G_km ((x ⊙ u_k) W) ⊙ v_m
      x W (I + P Q^T)       = h + ((h P) Q^T), h = x W
  'materialised' forms W_b = W ⊙ M_b [B, d_in, d_out] per example (the tests' reference).

The MI critic reads a fixed random sketch of the *realised* weighting of every scenario,
sketch(W_s) = Uᵀ W_s V (U [d_in, p], V [d_out, p] Gaussian, fixed, not trained): linear in
W_s, so scenarios whose weightings are equal have equal sketches.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

_ZERO = nn.initializers.zeros


def sketch_matrices(d_in: int, d_out: int, p: int):
  """The fixed Gaussian U [d_in, p], V [d_out, p] (scaled to unit-variance entries of UᵀWV)."""
  ku, kv = jax.random.split(jax.random.PRNGKey(7919 * d_in + d_out))
  return (jax.random.normal(ku, (d_in, p)) * d_in ** -0.5,
          jax.random.normal(kv, (d_out, p)) * d_out ** -0.5)


def _stacked(p, gen, mask):
  """Shared and (masked) specific factors stacked: rank r_sh + r, [N, K, rows], [N, K, d_out]."""
  a, bz = gen
  n = a.shape[0]
  fa = jnp.concatenate([jnp.broadcast_to(p['a_sh'], (n,) + p['a_sh'].shape), a], 1)
  fb = jnp.concatenate([jnp.broadcast_to(p['b_sh'], (n,) + p['b_sh'].shape),
                        bz * mask[:, None, None]], 1)
  return fa, fb


def materialise(form, p, gen, mask):
  """W_n [N, d_in, d_out] of N generated factor sets (specific part times mask [N])."""
  w = p['w']
  if form == 'core':
    g = gen[0] * mask[:, None, None]
    return w * (1.0 + p['a_sh'].T @ p['b_sh'] + jnp.einsum('ki,nkm,mj->nij', p['u'], g, p['v']))
  fa, fb = _stacked(p, gen, mask)
  if form == 'product':
    return w + jnp.einsum('ij,nkj,nkl->nil', w, fa, fb)
  return w * (1.0 + jnp.einsum('nki,nkj->nij', fa, fb))


def factored(form, p, x, gen, mask):
  """x W_n [N, d_out] for per-row factor sets, without forming W_n."""
  w = p['w']
  if form == 'product':
    fa, fb = _stacked(p, gen, mask)
    h = x @ w
    return h + jnp.einsum('bk,bkj->bj', jnp.einsum('bi,bki->bk', h, fa), fb)
  if form == 'core':
    def mod(f_a):  # (x ⊙ f_a[k]) W for every row k of f_a: [B, K, d_out]
      return jnp.einsum('bi,ki,ij->bkj', x, f_a, w)
    y = x @ w + jnp.einsum('bkj,kj->bj', mod(p['a_sh']), p['b_sh'])
    return y + jnp.einsum('bkj,bkm,mj->bj', mod(p['u']), gen[0] * mask[:, None, None], p['v'])
  fa, fb = _stacked(p, gen, mask)
  return x @ w + jnp.einsum('bkj,bkj->bj', jnp.einsum('bi,bki,ij->bkj', x, fa, w), fb)


class ModulatedDense(nn.Module):
  """y = x W_s + b; returns (y [B, d_out], sketches of the candidates' W_s or None)."""
  features: int                 # d_out
  rank: int = 4                 # r: rank of the scenario-specific factors (core: r x r)
  shared_rank: int = 4          # r_sh: rank of the scenario-shared factors (0 = none)
  form: str = 'elementwise'     # 'elementwise' | 'core' | 'product'
  compute: str = 'per_scenario'  # 'per_scenario' | 'factored' | 'materialised'
  sketch_dim: int = 4           # p: the critic's sketch Uᵀ W_s V is p x p
  dtype: Any = jnp.float32

  FORMS: ClassVar[tuple] = ('elementwise', 'core', 'product')
  COMPUTES: ClassVar[tuple] = ('per_scenario', 'factored', 'materialised')

  @nn.compact
  def __call__(self, x, h, ids, known, h_cand=None, sketch: bool = False):
    """Args:
      x: [B, d_in] layer input.
      h: codes of the auxiliary network, [S, G] (per_scenario) or [B, G] (per example).
      ids, known: [B] scenario ids (clipped) and the seen-scenario mask.
      h_cand: [B, S, G] per-example codes of the S candidate scenarios (per-example forms).
      sketch: also return the sketches of the candidates' realised weightings.
    Returns:
      y [B, d_out]; sketches [S, p*p] (per_scenario) or [B, S, p*p] (per example), or None.
    """
    d_in, d_out, r, form, dt = x.shape[-1], self.features, self.rank, self.form, self.dtype
    rows = d_out if form == 'product' else d_in
    p = {'w': self.param('kernel', nn.initializers.lecun_normal(), (d_in, d_out)).astype(dt),
         'a_sh': self.param('shared_a', nn.initializers.normal(1.0),
                            (self.shared_rank, rows)).astype(dt),
         'b_sh': self.param('shared_b', _ZERO, (self.shared_rank, d_out)).astype(dt)}
    bias = self.param('bias', _ZERO, (d_out,)).astype(dt)
    if form == 'core':  # scenario-shared U, V; the generated r x r core is specific
      p['u'] = self.param('core_u', nn.initializers.normal(1.0), (r, d_in)).astype(dt)
      p['v'] = self.param('core_v', nn.initializers.normal(r ** -0.5), (r, d_out)).astype(dt)
      core = nn.Dense(r * r, kernel_init=_ZERO, dtype=dt, name='scenario_core')
      generate = lambda c: (core(c).reshape(c.shape[0], r, r),)  # noqa: E731
    else:  # generated A(z) (random start) and B(z) (zero start)
      gen_a = nn.Dense(r * rows, bias_init=nn.initializers.normal(1.0), dtype=dt, name='scenario_a')
      gen_b = nn.Dense(r * d_out, kernel_init=_ZERO, dtype=dt, name='scenario_b')
      generate = lambda c: (gen_a(c).reshape(c.shape[0], r, rows),  # noqa: E731
                            gen_b(c).reshape(c.shape[0], r, d_out))
    su, sv = (m.astype(dt) for m in sketch_matrices(d_in, d_out, self.sketch_dim))
    if self.compute == 'per_scenario':
      s = h.shape[0]
      # S scenario weightings and the shared one (the same codes, specific part masked to 0).
      gen = generate(jnp.concatenate([h, h[:1]], 0))
      w_all = materialise(form, p, gen, (jnp.arange(s + 1) < s).astype(dt))   # [S+1, d_in, d_out]
      own = jax.nn.one_hot(jnp.where(known > 0, ids, s), s + 1, dtype=x.dtype)  # [B, S+1]
      y = jnp.einsum('bnj,bn->bj', jnp.einsum('bi,nij->bnj', x, w_all), own)
      sk = jnp.einsum('ip,nij,jq->npq', su, w_all[:s], sv).reshape(s, -1) if sketch else None
      return y + bias, sk
    b = x.shape[0]
    gen = generate(h)
    if self.compute == 'materialised':
      y = jnp.einsum('bi,bij->bj', x, materialise(form, p, gen, known.astype(dt)))
    else:
      y = factored(form, p, x, gen, known.astype(dt))
    sk = None
    if sketch:  # the S candidates of every example: N = B * S unmasked factor sets
      c = h_cand.shape[1]
      gen_c = generate(h_cand.reshape(b * c, -1))
      ones = jnp.ones((b * c,), dt)
      if self.compute == 'materialised':
        sk = jnp.einsum('ip,nij,jq->npq', su, materialise(form, p, gen_c, ones), sv)
      else:  # the p probe rows of Uᵀ through the factored layer give Uᵀ W_n; then V
        probe = jax.vmap(lambda u: factored(form, p, jnp.broadcast_to(u, (b * c, d_in)), gen_c, ones))
        sk = jnp.einsum('pnj,jq->npq', probe(su.T), sv)
      sk = sk.reshape(b, c, -1)
    return y + bias, sk
