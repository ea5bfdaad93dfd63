"""CAPSID tokenizer: capsule-routed, variable-length semantic IDs (arXiv 2605.05096, reconstructed).

The paper's equations are not public; this is the reading of its abstract in
research/capsid.md §1a with Sabour et al.'s dynamic routing (2017, Eqs. 1-3, §4 there).
Every choice the paper leaves open is a field of `CapsID` (and of config.tokenizer).

Per level l = 1..L_max, with residual r (r_1 = z = E(x)) and capsules e^l_k, k = 1..K:
  b_k^(0) = -||r - e^l_k||^2 / (tau ||r||^2)             (initial logits, scale-free)
  for t = 1..T:  c = softmax_topm(b)                      (coefficients, sum_k c_k = 1)
                 s = sum_k c_k u_k,  v = squash(s) = |s|^2/(1+|s|^2) s/|s|     (Sabour Eq. 1)
                 b_k <- b_k + <u_k, v> / (tau ||r||)      (agreement, Sabour Procedure 1)
  c = softmax_topm(b)                                     (final coefficients)
  q_l = sum_k c_k e^l_k,   r <- r - q_l                   (routed reconstruction updates r)
  token_l = argmax_k c_k (the active capsule),  a_l = c_{token_l} (its confidence)
  the ID ends after level l once l >= L_min and a_l >= theta, or at l = L_max.
The votes u_k are the capsules themselves (`votes='capsule'`) or e^l_k + W^l r (`'pose'`, a
shared linear pose map as in MIND's B2I routing). softmax_topm keeps the m largest logits
(top-m sparsity) and gives the others coefficient 0. With `hard=True` the coefficients are
one-hot at argmax b^(0) = the nearest capsule, so one level is a k-means assignment and the
whole tokenizer is residual k-means (a test checks this). Training decodes
x_hat = D(sum_l alive_l q_l), alive_l = 1 while the ID has not ended (no gradient through
the stop rule), and minimises
  ||x - x_hat||^2 + sum_l alive_l [ ||sg[r_l] - e_tok||^2 + beta ||r_l - sg[e_tok]||^2 ]
  + w_usage (log K - H(mean_batch c^l)) + w_sharp mean H(c^l)
i.e. reconstruction, VQ-style commitment to the active capsule (so the discrete ID stays close
to the soft path), capsule-usage (diversity) and sharpness (confident routing) regularisers.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp


def squash(s_nd, eps: float = 1e-9):
  """Sabour Eq. 1: v = |s|^2 / (1 + |s|^2) * s / |s|; |v| < 1 and v is parallel to s."""
  n2 = (s_nd ** 2).sum(-1, keepdims=True)
  return s_nd * (n2 / (1.0 + n2)) / jnp.sqrt(n2 + eps)


def topm_softmax(b_nk, m: int):
  """Softmax over the m largest logits of each row; the other entries get exactly 0."""
  if m <= 0 or m >= b_nk.shape[-1]:
    return jax.nn.softmax(b_nk, -1)
  kth = jax.lax.top_k(b_nk, m)[0][..., -1:]
  return jax.nn.softmax(jnp.where(b_nk >= kth, b_nk, -jnp.inf), -1)


def route(r_nd, e_kd, iters: int, tau: float, top_m: int, hard: bool = False, pose_dd=None):
  """Dynamic routing of residuals r [n, D] to capsules e [K, D] (module docstring).

  Returns (coefficients c [n, K] summing to 1 per row, squashed output v [n, D], logits [n, K]).
  """
  r2 = (r_nd ** 2).sum(1, keepdims=True)
  d2 = r2 - 2 * r_nd @ e_kd.T + (e_kd ** 2).sum(1)
  # Scale-free logits: distances relative to the item's own residual energy, so one tau and one
  # confidence threshold mean the same at every level (residuals shrink level by level).
  scale = tau * (r2 + 1e-6)
  b_nk = -d2 / scale
  if hard:  # nearest capsule, one-hot: residual k-means assignment
    c = jax.nn.one_hot(jnp.argmax(b_nk, 1), e_kd.shape[0], dtype=r_nd.dtype)
    return c, squash(c @ e_kd), b_nk
  u_nkd = e_kd[None] if pose_dd is None else e_kd[None] + (r_nd @ pose_dd)[:, None]
  for _ in range(iters):
    c = topm_softmax(b_nk, top_m)
    v_nd = squash(jnp.einsum('nk,nkd->nd', c, jnp.broadcast_to(u_nkd, (len(r_nd),) + e_kd.shape)))
    agree = jnp.einsum('nkd,nd->nk', jnp.broadcast_to(u_nkd, (len(r_nd),) + e_kd.shape), v_nd)
    b_nk = b_nk + agree / jnp.sqrt(scale * tau)   # <u_k, v> / (tau |r|), |v| < 1
  c = topm_softmax(b_nk, top_m)
  return c, squash(c @ e_kd), b_nk


class CapsID(nn.Module):
  """Encoder, L_max levels of K capsules with routing-by-agreement, decoder."""
  input_dim: int                    # d_in, item content vector size
  hidden: tuple = (512, 256, 128)   # encoder widths (decoder mirrors; TIGER's sizes)
  latent_dim: int = 32              # D, capsule dimension
  max_levels: int = 4               # L_max (open in the paper)
  min_levels: int = 2               # L_min: no ID ends before this many tokens (open)
  num_capsules: int = 256           # K per level (open; TIGER's codebook size)
  iters: int = 3                    # T routing iterations (Sabour: 3; open)
  tau: float = 0.1                  # routing temperature on relative squared distances (open)
  top_m: int = 4                    # capsules each residual may route to (0 = all; open)
  threshold: float = 0.9            # theta: confidence that ends the ID (open)
  hard: bool = False                # ablation: one-hot nearest-capsule routing (= residual k-means)
  fixed_length: bool = False        # ablation: every ID has L_max tokens
  votes: str = 'capsule'            # 'capsule' (u_k = e_k) | 'pose' (u_k = e_k + W r, MIND-style)
  beta: float = 0.25                # commitment weight (TIGER's value)

  def setup(self):
    self.enc = [nn.Dense(h) for h in self.hidden] + [nn.Dense(self.latent_dim)]
    self.dec = [nn.Dense(h) for h in reversed(self.hidden)] + [nn.Dense(self.input_dim)]
    self.capsules = self.param('capsules', nn.initializers.normal(1.0),
                               (self.max_levels, self.num_capsules, self.latent_dim))
    if self.votes == 'pose':
      self.pose = self.param('pose', nn.initializers.zeros, (self.max_levels, self.latent_dim, self.latent_dim))

  def encode(self, x_nd):
    for layer in self.enc[:-1]:
      x_nd = nn.relu(layer(x_nd))
    return self.enc[-1](x_nd)

  def decode(self, z_nd):
    for layer in self.dec[:-1]:
      z_nd = nn.relu(layer(z_nd))
    return self.dec[-1](z_nd)

  def tokenize(self, z_nd):
    """Routes latents [n, D] level by level; returns a dict of per-level arrays (module docstring).

    tokens [n, L] int32 (-1 after the end), length [n], conf [n, L], coeffs [L, n, K],
    alive [n, L] (1 while the ID runs), z_soft [n, D] = sum_l alive_l q_l, and the loss terms.
    """
    n, r = z_nd.shape[0], z_nd
    alive = jnp.ones((n,), z_nd.dtype)
    toks, all_toks, confs, alives, coeffs = [], [], [], [], []
    z_soft, commit = jnp.zeros_like(z_nd), 0.0
    for l in range(self.max_levels):
      e_kd = self.capsules[l]
      pose = self.pose[l] if self.votes == 'pose' else None
      c, _, _ = route(r, e_kd, self.iters, self.tau, self.top_m, self.hard, pose)
      tok = jnp.argmax(c, 1)
      conf = jnp.take_along_axis(c, tok[:, None], 1)[:, 0]
      q = c @ e_kd                                   # routed reconstruction sum_k c_k e_k
      e_tok = e_kd[tok]
      commit += (alive * (((jax.lax.stop_gradient(r) - e_tok) ** 2).sum(1)
                          + self.beta * ((r - jax.lax.stop_gradient(e_tok)) ** 2).sum(1))).mean()
      z_soft = z_soft + alive[:, None] * q
      toks.append(jnp.where(alive > 0, tok, -1))
      all_toks.append(tok)                         # the active capsule even after the end (collisions)
      confs.append(conf)
      alives.append(alive)
      coeffs.append(c)
      r = r - q
      if not self.fixed_length:  # stop once confident (after L_min tokens); no gradient through it
        stop = (l + 1 >= self.min_levels) & (jax.lax.stop_gradient(conf) >= self.threshold)
        alive = alive * (1.0 - stop.astype(z_nd.dtype))
    alive_nl = jnp.stack(alives, 1)
    return {'tokens': jnp.stack(toks, 1).astype(jnp.int32), 'tokens_all': jnp.stack(all_toks, 1).astype(jnp.int32),
            'length': alive_nl.sum(1).astype(jnp.int32),
            'conf': jnp.stack(confs, 1), 'coeffs': jnp.stack(coeffs), 'alive': alive_nl, 'z_soft': z_soft,
            'commit': commit}

  def __call__(self, x_nd):
    out = self.tokenize(self.encode(x_nd))
    x_hat = self.decode(out['z_soft'])
    out['recon'] = ((x_nd - x_hat) ** 2).sum(1).mean()
    c_lnk = out['coeffs']
    usage = c_lnk.mean(1)                                    # [L, K] batch usage of each capsule
    out['usage_loss'] = (jnp.log(self.num_capsules) + (usage * jnp.log(usage + 1e-9)).sum(1)).mean()
    out['sharp_loss'] = -(c_lnk * jnp.log(c_lnk + 1e-9)).sum(2).mean()
    return x_hat, out
