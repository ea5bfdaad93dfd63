"""Multi-stream residual connectors: Hyper-Connections and mHC (n residual streams).

* 'hc'  Hyper-Connections (arXiv 2409.19606, research/deres.md §3.1): n streams mixed by static
        (and, when dynamic, input-dependent) width and depth connections.
* 'mhc' mHC (arXiv 2512.24880 Eqs. 3, 10, 11, §3.2): H^pre = sigmoid(.), H^post = 2 sigmoid(.),
        H^res projected onto the doubly stochastic matrices by Sinkhorn-Knopp.
Same interface as every connector of connectors.py (init_state, __call__, update, output,
flops); both need static unit indices (unrolled blocks). connectors.py has the full docstring.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import flops as flops_lib
from deres_jax.models import layers


class HyperConnections(nn.Module):
  """Hyper-Connections: n streams H [n, T, B, D]; u = A_m^T H, H <- A_r^T H + B^T f.

  Static part per unit (research/deres.md §3.1): A_m = e_{index mod n}, A_r = I_n, B = 1_n,
  so with H^0 = n copies of emb every stream equals the Pre-Norm stream and their sum,
  RMS-normalised by the backbone, equals Pre-Norm's output. Dynamic part (DHC): with
  Hn = RMSNorm(H) per stream, A_m += s_a tanh(Hn W_m), A_r += s_a tanh(Hn W_r),
  B += s_b tanh(Hn W_b); W zero-initialised, s_a = s_b = 0.01.
  """
  width: int = 64               # D
  num_units: int = 1            # U
  index: int = 0                # this unit's index j (static): the round-robin A_m
  rate: int = 4                 # n: expansion rate (HC x4)
  dynamic: bool = True          # DHC: input-dependent matrices on top of the static ones

  def setup(self):
    n, d = self.rate, self.width
    self.a_m = self.param('static_alpha_m', lambda _: jax.nn.one_hot(self.index % n, n))
    self.a_r = self.param('static_alpha_r', lambda _: jnp.eye(n))
    self.b = self.param('static_beta', nn.initializers.ones, (n,), jnp.float32)
    if self.dynamic:
      self.w_m = self.param('dynamic_alpha_m', nn.initializers.zeros, (d,), jnp.float32)
      self.w_r = self.param('dynamic_alpha_r', nn.initializers.zeros, (d, n), jnp.float32)
      self.w_b = self.param('dynamic_beta', nn.initializers.zeros, (d,), jnp.float32)
      self.s_a = self.param('dynamic_alpha_scale', nn.initializers.constant(0.01), (), jnp.float32)
      self.s_b = self.param('dynamic_beta_scale', nn.initializers.constant(0.01), (), jnp.float32)

  def init_state(self, emb, stacked: bool = False):
    del stacked
    return {'H': jnp.broadcast_to(emb, (self.rate,) + emb.shape)}  # H^0: emb tiled n times

  def coefficients(self, big_h):
    """(A_m [n, T, B], A_r [n, T, B, n], B [n, T, B]) for the streams big_h [n, T, B, D]."""
    a_m = self.a_m[:, None, None]
    a_r = self.a_r[:, None, None, :]
    b = self.b[:, None, None]
    if self.dynamic:
      hn = layers.rms_normalize(big_h).astype(jnp.float32)
      a_m = a_m + self.s_a * jnp.tanh(jnp.einsum('ntbd,d->ntb', hn, self.w_m))
      a_r = a_r + self.s_a * jnp.tanh(jnp.einsum('ntbd,dk->ntbk', hn, self.w_r))
      b = b + self.s_b * jnp.tanh(jnp.einsum('ntbd,d->ntb', hn, self.w_b))
    return a_m, a_r, b

  def __call__(self, state, j):
    big_h = state['H']
    a_m, _, _ = self.coefficients(big_h)
    return jnp.einsum('ntb,ntbd->tbd', a_m.astype(big_h.dtype), big_h)

  def update(self, state, out, j):
    big_h = state['H']
    _, a_r, b = self.coefficients(big_h)
    mixed = jnp.einsum('itbk,itbd->ktbd', a_r.astype(big_h.dtype), big_h)  # A_r^T H
    return dict(state, H=mixed + b.astype(out.dtype)[..., None] * out[None])

  def output(self, state):
    return jnp.sum(state['H'], axis=0)  # the n rows summed (HC §2)

  def flops(self, t: int, d: int, j: int) -> int:
    n = self.rate
    if j >= self.num_units:
      return 0
    mix = 2 * n * t * d + 2 * n * n * t * d + 2 * n * t * d  # A_m^T H, A_r^T H, B^T f
    # The coefficients are computed for the input and for the update from the same H: one
    # computation after XLA's common-subexpression elimination.
    dyn = n * flops_lib.dense(d, n + 2, t) if self.dynamic else 0
    return mix + dyn


def sinkhorn(logits, iters: int):
  """Sinkhorn-Knopp: exp(logits [..., n, n]) alternately row- and column-normalised.

  The n x n axes are moved to the front: sums over them then add whole [T, B] slabs, which
  on CPU is about 1.7x faster (forward and backward) than reducing a tiny trailing axis. The
  iterations run as one `lax.scan` body: the same arithmetic (the same values and gradients)
  as a Python loop, whose 20 unrolled iterations compiled to a 2x slower gradient and a 1.2x
  slower mHC train step on CPU, with 1.6x the compile time (benchmarks/bench_sinkhorn.py).
  """
  m = jnp.moveaxis(logits, (-2, -1), (0, 1))  # [n, n, ...]
  m = jnp.exp(m - jnp.max(m, axis=(0, 1), keepdims=True))

  def one(m, _):
    m = m / jnp.sum(m, axis=1, keepdims=True)  # rows sum to 1
    return m / jnp.sum(m, axis=0, keepdims=True), None  # columns sum to 1

  if iters > 0:
    m, _ = jax.lax.scan(one, m, None, length=iters)
  return jnp.moveaxis(m, (0, 1), (-2, -1))


class ManifoldHyperConnections(nn.Module):
  """mHC: x_{l+1} = H^res x_l + H^post^T f(H^pre x_l) on n streams (arXiv 2512.24880, Eq. 3).

  From x~ = RMSNorm(vec H) per token (the n*D vector), Eq. 10-11:
    H^pre = sigmoid(a_pre x~ phi_pre + b_pre), H^post = 2 sigmoid(a_post x~ phi_post + b_post),
    H^res = SinkhornKnopp(a_res mat(x~ phi_res) + b_res), doubly stochastic.
  phi = 0 and a = 0.01 at init (the paper gives no b, so these are our choices): b_post = 0
  so H^post = 1; b_res = res_init * I, near-identity mixing that 20 iterations still make
  doubly stochastic to ~1e-3 for logits within about ±0.5 of it; b_pre = ±3 round-robin
  (sigmoid 0.95 on stream j mod n, 0.05 elsewhere), like HC's A_m = e_{j mod n}: with a
  uniform H^pre the n equal streams would get equal gradients and never differ. With equal
  streams at init every stream is the Pre-Norm stream and u a positive multiple of it (the
  unit's RMSNorm removes the factor). H^res is sown as 'res_mixing'.
  """
  width: int = 64               # D
  num_units: int = 1            # U
  index: int = 0                # this unit's index j (static): the round-robin H^pre
  rate: int = 4                 # n: residual streams (mHC n = 4)
  sinkhorn_iters: int = 20      # t_max (paper 20)
  res_init: float = 2.0         # b_res = res_init * I

  def setup(self):
    n, nd = self.rate, self.rate * self.width
    pre = 3.0 * (2 * jax.nn.one_hot(self.index % n, n) - 1)
    self.phi = self.param('phi', nn.initializers.zeros, (nd, 2 * n + n * n), jnp.float32)
    self.scale = self.param('alpha', nn.initializers.constant(0.01), (3,), jnp.float32)
    self.b_pre = self.param('b_pre', lambda _: pre)
    self.b_post = self.param('b_post', nn.initializers.zeros, (n,), jnp.float32)
    self.b_res = self.param('b_res', lambda _: self.res_init * jnp.eye(n))

  def init_state(self, emb, stacked: bool = False):
    del stacked
    return {'H': jnp.broadcast_to(emb, (self.rate,) + emb.shape)}

  def _project(self, big_h, cols: slice):
    """x~ phi[:, cols] [T, B, k] with x~ = RMSNorm(vec H) per token (Eq. 10)."""
    n = self.rate
    x = jnp.moveaxis(big_h, 0, 2).reshape(big_h.shape[1:3] + (n * big_h.shape[-1],))
    return jnp.einsum('tbe,ek->tbk', layers.rms_normalize(x).astype(jnp.float32), self.phi[:, cols])

  def __call__(self, state, j):
    """u = H^pre H with H^pre = sigmoid(a_pre x~ phi_pre + b_pre) [T, B, n]."""
    big_h, n = state['H'], self.rate
    pre = jax.nn.sigmoid(self.scale[0] * self._project(big_h, slice(0, n)) + self.b_pre)
    return jnp.einsum('tbn,ntbd->tbd', pre.astype(big_h.dtype), big_h)

  def update(self, state, out, j):
    """H <- H^res H + H^post^T f: H^post = 2 sigmoid(.) [T, B, n], H^res = SK(.) [T, B, n, n]."""
    big_h, n = state['H'], self.rate
    p = self._project(big_h, slice(n, None))  # the update's own columns: no repeated projection
    post = 2 * jax.nn.sigmoid(self.scale[1] * p[..., :n] + self.b_post)
    res = self.scale[2] * p[..., n:].reshape(p.shape[:2] + (n, n)) + self.b_res
    res = sinkhorn(res, self.sinkhorn_iters)
    if self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'res_mixing', res)
    mixed = jnp.einsum('tbki,itbd->ktbd', res.astype(big_h.dtype), big_h)  # H^res H
    return dict(state, H=mixed + jnp.moveaxis(post, -1, 0).astype(out.dtype)[..., None] * out[None])

  def output(self, state):
    return jnp.sum(state['H'], axis=0)

  def flops(self, t: int, d: int, j: int) -> int:
    n = self.rate
    if j >= self.num_units:
      return 0
    maps = flops_lib.dense(n * d, 2 * n + n * n, t)
    # Sinkhorn-Knopp is elementwise but not negligible here: exp, then per iteration a sum
    # and a division over rows and over columns of the n x n matrix of every token.
    sinkhorn_flops = n * n * (1 + 4 * self.sinkhorn_iters) * t
    return maps + sinkhorn_flops + 2 * n * t * d + 2 * n * n * t * d + 2 * n * t * d
