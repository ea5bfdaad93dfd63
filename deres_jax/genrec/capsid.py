"""CAPSID tokenizer: capsule-routed, variable-length semantic IDs (arXiv 2605.05096, §3 of the paper).

Equations as recovered from the full text (research/capsid.md §9.1); numbers are the paper's.
Input: the item embedding x, a learned projection z = P(x), then r_0 = z / ||z||.
Layer l = 1..L_max has K capsules, each with its own pose matrix and bias (per-capsule affine votes):
  u_k = (W_lk + A_l B_l) r_{l-1} + b_lk                  (A_l B_l: rank-8 routing adapter, 0 until stage 2)
Routing by agreement from zero logits, T = 3 agreement updates:
  a = 0;  repeat T times { c = softmax_k(a);  v = sum_k c_k u_k;  o = squash(v);  a_k += u_k . o }
  squash(z) = ||z||^2 / (0.5 + ||z||^2) * z / ||z||      (the 0.5 is the paper's; Sabour et al. use 1)
The token and its confidence use the coefficients after the T-th update (c = softmax(a), v, o
recomputed once more; so T = 1 is one agreement step, not the uniform start):
  s_l = argmax_k c_k,   q_l = max_k c_k * ||o||
Soft residual (the routed reconstruction, not the winner alone; `residual='hard'` is the ablation):
  r_l = r_{l-1} - sum_k c_k squash(u_k)          ('hard': r_l = r_{l-1} - squash(u_{s_l}))
Length: the ID ends at the first l with q_l >= tau (0.82, 'confidence'), or ||r_l|| <= eps (0.08,
'residual'), or l = L_max (6, 'cap'); `fixed_length` = n > 0 is the fixed-length ablation.
Losses (§9.3; the lambda weights are not published, they are config fields):
  recon  = ||x - D(r_hat)||^2, r_hat = sum_{l <= L} sum_k c_k squash(u_k)  (soft reconstruction of r_0)
  spread = mean_{l alive} mean_{k != s_l} max(0, m - (c_{s_l} - c_k))^2   (Hinton et al. 2018's spread
           loss on the routing coefficients; the margin m is annealed 0.2 -> 0.9 by the caller)
  length = E[L] = sum_l prod_{j<l} (1 - p_j),  p_j = 1 - (1 - sig((q_j - tau)/kappa)) (1 - sig((eps - ||r_j||)/kappa))
           (a smooth version of the stop rule; kappa is ours)
With T = 1, `residual='hard'` and a fixed length, a layer is residual quantisation whose codeword
for capsule k is squash(W_k r + b_k) (chosen by one agreement step): tests/test_capsid_paper.py.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

STOP_RULES = ('confidence', 'residual', 'cap')   # index 0, 1, 2 in `stop_rule`


def squash(z, k: float = 0.5, eps: float = 1e-9):
  """squash(z) = |z|^2 / (k + |z|^2) * z / |z| (the paper: k = 0.5); |squash(z)| < 1, parallel to z."""
  n2 = (z ** 2).sum(-1, keepdims=True)
  return z * (n2 / (k + n2)) / jnp.sqrt(n2 + eps)


def unsquash(y, k: float = 0.5, eps: float = 1e-6):
  """The inverse of `squash` for |y| < 1: |z|^2 = k rho / (1 - rho), rho = |y| (used to initialise biases)."""
  rho = jnp.clip(jnp.linalg.norm(y, axis=-1, keepdims=True), eps, 1 - 1e-3)
  return y / rho * jnp.sqrt(k * rho / (1 - rho))


def votes(r_nd, w_kde, b_kd, adapter=None):
  """Per-capsule affine votes u [n, K, D] = W_k r + b_k (+ A B r, the low-rank adapter shared by a layer)."""
  u = jnp.einsum('kde,ne->nkd', w_kde, r_nd) + b_kd[None]
  if adapter is not None:
    a_dr, b_re = adapter
    u = u + (r_nd @ b_re.T @ a_dr.T)[:, None]
  return u


def routed_vote(u_nkd, c_nk, k: float = 0.5, residual: str = 'soft'):
  """What a layer subtracts from the residual [n, D]: sum_k c_k squash(u_k) ('soft', the paper) or the
  winner's squash(u_s) ('hard', the ablation)."""
  su = squash(u_nkd, k)
  if residual == 'soft':
    return jnp.einsum('nk,nkd->nd', c_nk, su)
  return jnp.take_along_axis(su, jnp.argmax(c_nk, 1)[:, None, None], 1)[:, 0]


def route(u_nkd, iters: int, k: float = 0.5):
  """Routing by agreement from zero logits (module docstring); returns (c [n, K], o [n, D], a [n, K])."""
  a = jnp.zeros(u_nkd.shape[:2], u_nkd.dtype)
  for t in range(iters):
    # softmax(0) = 1/K: written out, so XLA does not constant-fold a [n, K] softmax of zeros.
    c = jax.nn.softmax(a, -1) if t else jnp.full(a.shape, 1.0 / a.shape[1], a.dtype)
    o = squash(jnp.einsum('nk,nkd->nd', c, u_nkd), k)
    a = a + jnp.einsum('nkd,nd->nk', u_nkd, o)
  c = jax.nn.softmax(a, -1)
  return c, squash(jnp.einsum('nk,nkd->nd', c, u_nkd), k), a


def spread_loss(c_nk, margin):
  """mean_{k != s} max(0, m - (c_s - c_k))^2 per row, s = argmax c (Hinton et al. 2018, Eq. 3, averaged)."""
  winner = jax.nn.one_hot(jnp.argmax(c_nk, -1), c_nk.shape[-1], dtype=bool)
  c_s = c_nk.max(-1, keepdims=True)
  per = jnp.where(winner, 0.0, jnp.maximum(0.0, margin - (c_s - c_nk)) ** 2)
  return per.sum(-1) / (c_nk.shape[-1] - 1)


class CapsID(nn.Module):
  """Projection, L_max layers of K capsules with per-capsule affine votes and routing, decoder."""
  input_dim: int                    # d_in, item content vector size
  hidden: tuple = (512, 256, 128)   # projection MLP widths (the decoder mirrors); the paper leaves it open
  latent_dim: int = 32              # D, capsule / vote dimension (open; TIGER's latent size)
  max_levels: int = 6               # L_max (paper: 6)
  num_capsules: int = 256           # K per layer (paper: 256)
  iters: int = 3                    # T agreement updates (paper: 3)
  tau: float = 0.82                 # confidence q_l >= tau ends the ID (paper: 0.82)
  eps: float = 0.08                 # residual norm ||r_l|| <= eps ends the ID (paper: 0.08)
  squash_k: float = 0.5             # the constant in squash (paper: 0.5; Sabour et al.: 1)
  residual: str = 'soft'            # 'soft' (paper) | 'hard' (ablation: subtract the winner's squashed vote)
  fixed_length: int = 0             # 0: the stop rules; n > 0: every ID has n tokens (ablation)
  adapter_rank: int = 8             # rank of the stage-2 routing adapter A_l B_l (paper: 8; 0 = none)
  length_kappa: float = 0.05        # temperature of the smooth stop rule in E[L] (ours)

  def setup(self):
    L, K, D = self.max_levels, self.num_capsules, self.latent_dim
    self.enc = [nn.Dense(h) for h in self.hidden] + [nn.Dense(D)]
    self.dec = [nn.Dense(h) for h in reversed(self.hidden)] + [nn.Dense(self.input_dim)]
    # Pose matrices W_lk [L, K, D, D] and biases b_lk [L, K, D]; capsid_fit.init_params sets them.
    self.pose = self.param('pose', nn.initializers.normal(1.0 / D ** 0.5), (L, K, D, D))
    self.bias = self.param('bias', nn.initializers.normal(0.3), (L, K, D))
    if self.adapter_rank:  # B = 0: the adapter is the identity map until it is trained (stage 2)
      self.adapter_a = self.param('adapter_a', nn.initializers.normal(0.1), (L, D, self.adapter_rank))
      self.adapter_b = self.param('adapter_b', nn.initializers.zeros, (L, self.adapter_rank, D))

  def project(self, x_nd):
    """z = P(x) [n, D], the projection before normalisation."""
    for layer in self.enc[:-1]:
      x_nd = nn.relu(layer(x_nd))
    return self.enc[-1](x_nd)

  def encode(self, x_nd):
    """r_0 = P(x) / ||P(x)|| [n, D]."""
    z = self.project(x_nd)
    return z / jnp.sqrt((z ** 2).sum(-1, keepdims=True) + 1e-12)

  def decode(self, r_nd):
    for layer in self.dec[:-1]:
      r_nd = nn.relu(layer(r_nd))
    return self.dec[-1](r_nd)

  def tokenize(self, r_nd, margin=0.2):
    """Routes unit vectors r_0 [n, D] layer by layer (module docstring).

    Args:
      r_nd: r_0, [n, D] (normally unit norm: `encode`).
      margin: the spread loss margin m (annealed by the caller).
    Returns:
      dict: tokens [n, L] int32 (-1 after the end), tokens_all [n, L] (the winner at every layer),
      length [n], stop_rule [n] (index into STOP_RULES), conf [n, L], res_norm [n, L] (||r_l||),
      sub_norm [n, L] (||sum_k c_k squash(u_k)||, what layer l subtracts), winner [n, L] (max_k c_k),
      coeffs [L, n, K], alive [n, L], r_hat [n, D] (soft reconstruction up to the end), and the
      loss terms spread, expected_length.
    """
    n, dt = r_nd.shape[0], r_nd.dtype
    r, alive, survive = r_nd, jnp.ones((n,), dt), jnp.ones((n,), dt)
    stop_rule, r_hat = jnp.full((n,), 2, jnp.int32), jnp.zeros_like(r_nd)
    out = {k: [] for k in ('tokens', 'tokens_all', 'conf', 'res_norm', 'sub_norm', 'winner', 'coeffs', 'alive')}
    spread, exp_len = 0.0, 0.0
    for l in range(self.max_levels):
      adapter = (self.adapter_a[l], self.adapter_b[l]) if self.adapter_rank else None
      u = votes(r, self.pose[l], self.bias[l], adapter)
      c, o, _ = route(u, self.iters, self.squash_k)
      tok = jnp.argmax(c, 1)
      conf = c.max(1) * jnp.linalg.norm(o, axis=1)
      q = routed_vote(u, c, self.squash_k, self.residual)
      r = r - q
      rn = jnp.sqrt((r ** 2).sum(1) + 1e-12)
      r_hat = r_hat + alive[:, None] * q
      spread = spread + (alive * spread_loss(c, margin)).sum() / n
      exp_len = exp_len + survive            # E[L] = sum_l P(layer l is reached)
      p_conf = jax.nn.sigmoid((conf - self.tau) / self.length_kappa)
      p_res = jax.nn.sigmoid((self.eps - rn) / self.length_kappa)
      survive = survive * (1 - p_conf) * (1 - p_res)
      for key, val in (('tokens', jnp.where(alive > 0, tok, -1)), ('tokens_all', tok), ('conf', conf),
                       ('res_norm', rn), ('sub_norm', jnp.sqrt((q ** 2).sum(1) + 1e-12)), ('winner', c.max(1)),
                       ('coeffs', c), ('alive', alive)):
        out[key].append(val)
      # The stop rules (no gradient through them); the first that fires is recorded.
      if self.fixed_length:
        stop = jnp.full((n,), l + 1 >= self.fixed_length)
        rule = jnp.full((n,), 2, jnp.int32)
      else:
        by_conf, by_res = conf >= self.tau, rn <= self.eps
        stop = by_conf | by_res | (l + 1 >= self.max_levels)
        rule = jnp.where(by_conf, 0, jnp.where(by_res, 1, 2))
      stop_rule = jnp.where((alive > 0) & stop, rule, stop_rule)
      alive = alive * (1.0 - jax.lax.stop_gradient(stop).astype(dt))
    alive_nl = jnp.stack(out['alive'], 1)
    res = {k: jnp.stack(v, 0 if k == 'coeffs' else 1) for k, v in out.items()}
    res.update(tokens=res['tokens'].astype(jnp.int32), tokens_all=res['tokens_all'].astype(jnp.int32),
               length=alive_nl.sum(1).astype(jnp.int32), stop_rule=stop_rule, r_hat=r_hat, spread=spread,
               expected_length=exp_len.mean())
    return res

  def __call__(self, x_nd, margin=0.2):
    out = self.tokenize(self.encode(x_nd), margin)
    x_hat = self.decode(out['r_hat'])
    out['recon'] = ((x_nd - x_hat) ** 2).sum(1).mean()
    return x_hat, out
