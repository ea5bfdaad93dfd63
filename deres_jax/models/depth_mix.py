"""Fused depth attention: the AttnRes / DeRes unit input in one pass, with a hand-written VJP.

For unit j with visible sources v_1..v_n ([T, B, D] each; the token embedding and the block
sums), their cached inverse RMS r_n ([T, B]), a pseudo-query w ([D] or [T, D]) and the
identity stream h:

  s_n   = (w . v_n) * r_n                       (AttnRes Eq. 2: w . RMSNorm(v_n), no 1/sqrt(d))
  alpha = softmax_n(s)                          ('softmax', AttnRes)
        | act(s_n) / n  or  act(s_n)            ('silu' = Pointwise AttnRes, 'sigmoid'; A6)
  a     = sum_n alpha_n v_n
  u     = a | h + g*a ('add') | g*h + (1-g)*a ('convex'),  g = sigmoid(theta)   (DeRes, A4/A5)

`depth_mix` is the reference (plain jnp, what autodiff differentiates). `depth_mix_fused`
computes the same values under a `jax.custom_vjp` whose backward pass recomputes the scores
and weights from its inputs instead of keeping them, and forms every gradient with one
contraction per source:

  da = du*g (add) | du*(1-g) (convex);  dh = du | du*g;  dtheta = g(1-g) * sum du*a | du*(h-a)
  dalpha_n = sum_d da*v_n;  dv_n = alpha_n*da + ds_n*r_n*w
  ds = alpha*(dalpha - sum_n alpha*dalpha) (softmax) | act'(s)*dalpha*c (pointwise, c = 1/n or 1)
  dw = sum_n ds_n*r_n*v_n;  dr_n = ds_n*(w . v_n)

so nothing of size [n, T, B] outlives the forward pass, and on an accelerator XLA fuses the
score, weight and mix passes of each source (one read of each v_n forward, two backward).
`impl='auto'` in the connector picks the fused path on GPU/TPU and the reference on CPU,
where XLA:CPU does not fuse the extra passes either way (benchmarks/README.md).
"""
import functools

import jax
import jax.numpy as jnp


def _act(kind):
  return {'silu': jax.nn.silu, 'sigmoid': jax.nn.sigmoid}[kind]


def _act_grad(kind, s):
  sig = jax.nn.sigmoid(s)
  return sig * (1 + s * (1 - sig)) if kind == 'silu' else sig * (1 - sig)


def _scores(srcs, rinvs, w, key_norm):
  """[n] list of [T, B] float32 scores (w . v_n) * r_n."""
  spec = 'tbd,d->tb' if w.ndim == 1 else 'tbd,td->tb'
  out = []
  for v, r in zip(srcs, rinvs):
    s = jnp.einsum(spec, v, w.astype(v.dtype), preferred_element_type=jnp.float32)
    out.append(s * r if key_norm else s)
  return out


def _weights(scores, mask, kind, pointwise_norm):
  """[n] list of [T, B] float32 weights over the sources; mask [n] bool or None (all visible)."""
  n = len(scores)
  if kind == 'softmax':
    if mask is not None:
      scores = [jnp.where(mask[i], s, -jnp.inf) for i, s in enumerate(scores)]
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, scores))
    e = [jnp.exp(s - m) for s in scores]
    z = sum(e)
    return [x / z for x in e]
  act = _act(kind)
  alpha = [act(s) for s in scores]
  if mask is not None:
    alpha = [jnp.where(mask[i], a, 0.0) for i, a in enumerate(alpha)]
  if pointwise_norm == 'num_sources':
    count = n if mask is None else jnp.sum(mask).astype(jnp.float32)
    alpha = [a / count for a in alpha]
  return alpha


def _merge(a, h, theta, merge):
  if merge == 'none':
    return a
  g = jnp.float32(1.0) if theta is None else jax.nn.sigmoid(theta)
  g = g.astype(a.dtype)
  return h + g * a if merge == 'add' else g * h + (1 - g) * a


def depth_mix(srcs, rinvs, w, h=None, theta=None, mask=None, *, weights='silu',
              pointwise_norm='num_sources', key_norm=True, merge='add'):
  """Reference unit input u [T, B, D] (module docstring); differentiated by autodiff.

  Args:
    srcs: list of n source arrays [T, B, D]. rinvs: list of n [T, B] float32 inverse RMS.
    w: pseudo-query [D] or [T, D]. h: identity stream [T, B, D] (unused for merge='none').
    theta: gate logits [D], [1] or None (g = 1). mask: [n] bool visible sources, or None.
    weights: 'softmax' | 'silu' | 'sigmoid'. merge: 'none' (AttnRes) | 'add' | 'convex'.
  """
  alpha = _weights(_scores(srcs, rinvs, w, key_norm), mask, weights, pointwise_norm)
  a = sum(al.astype(v.dtype)[..., None] * v for al, v in zip(alpha, srcs))
  return _merge(a, h, theta, merge)


def depth_mix_fused(srcs, rinvs, w, h=None, theta=None, mask=None, *, weights='silu',
                    pointwise_norm='num_sources', key_norm=True, merge='add'):
  """`depth_mix` with the hand-written VJP of the module docstring (same arguments)."""
  static = (weights, pointwise_norm, key_norm, merge)
  if h is None:
    h = jnp.zeros_like(srcs[0])
  if mask is None:
    mask = jnp.ones((len(srcs),), bool)
  return _fused(static, list(srcs), list(rinvs), w, h, theta, mask)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(static, srcs, rinvs, w, h, theta, mask):
  weights, pointwise_norm, key_norm, merge = static
  return depth_mix(srcs, rinvs, w, h, theta, mask, weights=weights, pointwise_norm=pointwise_norm,
                   key_norm=key_norm, merge=merge)


def _fused_fwd(static, srcs, rinvs, w, h, theta, mask):
  # Residuals are the inputs only: scores and weights are recomputed in the backward pass.
  return _fused(static, srcs, rinvs, w, h, theta, mask), (srcs, rinvs, w, h, theta, mask)


def _fused_bwd(static, res, du):
  weights, pointwise_norm, key_norm, merge = static
  srcs, rinvs, w, h, theta, mask = res
  dt = srcs[0].dtype
  spec = 'tbd,d->tb' if w.ndim == 1 else 'tbd,td->tb'
  raw = [jnp.einsum(spec, v, w.astype(dt), preferred_element_type=jnp.float32) for v in srcs]  # w . v_n
  scores = [s * r for s, r in zip(raw, rinvs)] if key_norm else raw
  alpha = _weights(scores, mask, weights, pointwise_norm)
  a = sum(al.astype(dt)[..., None] * v for al, v in zip(alpha, srcs))
  # Merge: du -> da, dh, dtheta.
  g = jnp.float32(1.0) if theta is None else jax.nn.sigmoid(theta)
  if merge == 'none':
    da, dh, dg = du, jnp.zeros_like(h), None
  elif merge == 'add':
    da, dh = du * g.astype(dt), du
    dg = du.astype(jnp.float32) * a.astype(jnp.float32)
  else:  # convex
    da, dh = du * (1 - g).astype(dt), du * g.astype(dt)
    dg = du.astype(jnp.float32) * (h.astype(jnp.float32) - a.astype(jnp.float32))
  dtheta = None
  if theta is not None:
    dg = dg.reshape(-1, dg.shape[-1]).sum(0)              # [D]
    dg = dg if theta.shape[-1] == dg.shape[-1] else dg.sum(keepdims=True)  # scalar gate [1]
    dtheta = (dg * g * (1 - g)).astype(theta.dtype)
  # Mix: dalpha_n = sum_d da * v_n.
  dalpha = [jnp.einsum('tbd,tbd->tb', da, v, preferred_element_type=jnp.float32) for v in srcs]
  # Weights -> scores.
  if weights == 'softmax':
    dot = sum(al * dal for al, dal in zip(alpha, dalpha))
    ds = [al * (dal - dot) for al, dal in zip(alpha, dalpha)]
  else:
    c = 1.0
    if pointwise_norm == 'num_sources':
      c = 1.0 / jnp.sum(mask).astype(jnp.float32)
    ds = [jnp.where(mask[i], _act_grad(weights, s) * dal * c, 0.0)
          for i, (s, dal) in enumerate(zip(scores, dalpha))]
  # Scores -> sources, query and inverse RMS.
  dsr = [d * r for d, r in zip(ds, rinvs)] if key_norm else ds   # ds/d(w . v_n)
  wq = w.astype(dt)
  wq = wq[None, None, :] if w.ndim == 1 else wq[:, None, :]
  dsrcs = [al.astype(dt)[..., None] * da + d.astype(dt)[..., None] * wq for al, d, in zip(alpha, dsr)]
  spec_w = 'tb,tbd->d' if w.ndim == 1 else 'tb,tbd->td'
  dw = sum(jnp.einsum(spec_w, d, v.astype(jnp.float32)) for d, v in zip(dsr, srcs)).astype(w.dtype)
  drinvs = [d * s for d, s in zip(ds, raw)] if key_norm else [jnp.zeros_like(r) for r in rinvs]
  return dsrcs, drinvs, dw, dh, dtheta, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def use_fused(impl: str) -> bool:
  """impl 'auto' (fused on GPU/TPU, reference on CPU) | 'fused' | 'reference'."""
  if impl not in ('auto', 'fused', 'reference'):
    raise ValueError(f"depth-mix impl must be 'auto', 'fused' or 'reference', got {impl!r}.")
  return impl == 'fused' or (impl == 'auto' and jax.default_backend() in ('gpu', 'tpu'))
