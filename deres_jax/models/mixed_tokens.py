"""OneTrans's mixed parameterisation and causal attention over [S-tokens; NS-tokens].

OneTrans (arXiv 2510.26104, research/deres.md §4.1) puts the sequential tokens (S-tokens, one
per history position, oldest first) before the non-sequential ones (NS-tokens) in one
Transformer. The weights are mixed: all S-tokens share one set of Q/K/V, output and FFN
weights (they are homogeneous positions of a sequence), while each NS-token has its own
(heterogeneous features). The attention is causal over the S-tokens: S-token i attends to
S-tokens j <= i only (never to a later S-token, nor to an NS-token), which is what lets an
S-token's keys and values be cached across requests. NS-tokens come last and attend to every
S-token; among themselves they attend to all NS-tokens (`ns_causal=False`, as OneTrans without
S-tokens does, so that no S-tokens reproduces it exactly) or only to earlier ones
(`ns_causal=True`, one causal mask over the whole sequence; the paper's figure leaves the
NS-NS pattern open).

Token-major activations [T, B, D]. A layer knows the number of NS-tokens `num_ns` = m; the
first T - m tokens of its input are S-tokens (under the pyramid T shrinks from the front, so
the oldest S-tokens go first and NS-token t keeps its weights). With T <= m (a pyramid that
also drops NS-tokens) only the last T NS-tokens and their weights remain.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import layers


class MixedDense(nn.Module):
  """Dense over [T, B, D_in]: one shared kernel for the S-tokens, one kernel per NS-token."""
  features: int                 # D_out
  num_ns: int                   # m: NS-tokens, the last m tokens of the full sequence
  token_specific: bool = True   # False: one kernel for every token (qkv/ffn = 'shared')
  use_bias: bool = True         # add a bias (shared for S-tokens, per NS-token)
  logical_axes: tuple = (layers.EMBED, layers.MLP)  # names of (D_in, D_out)
  dtype: Any = jnp.float32      # computation dtype

  @nn.compact
  def __call__(self, x):  # [T, B, D_in] -> [T, B, D_out]
    t, d_in = x.shape[0], x.shape[-1]
    s = max(t - self.num_ns, 0)  # S-tokens present
    init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', batch_axis=(0,))
    shared = lambda: self.param('s_kernel', nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), self.logical_axes), (d_in, self.features), jnp.float32)
    if not self.token_specific:
      y = jnp.einsum('tbd,dk->tbk', x, shared().astype(self.dtype))
      if self.use_bias:
        y = y + self.param('s_bias', nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
      return y
    parts = []
    if s:
      y = jnp.einsum('tbd,dk->tbk', x[:s], shared().astype(self.dtype))
      if self.use_bias:
        y = y + self.param('s_bias', nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
      parts.append(y)
    kernel = self.param('ns_kernel', nn.with_logical_partitioning(
        init, (layers.TOKENS,) + self.logical_axes), (self.num_ns, d_in, self.features), jnp.float32)
    n = t - s  # the NS-tokens still present: the last n of the m
    y = jnp.einsum('tbd,tdk->tbk', x[s:], kernel[self.num_ns - n:].astype(self.dtype))
    if self.use_bias:
      bias = self.param('ns_bias', nn.initializers.zeros, (self.num_ns, self.features), jnp.float32)
      y = y + bias[self.num_ns - n:, None].astype(self.dtype)
    parts.append(y)
    return jnp.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]


def causal_mask(num_keys: int, num_queries: int, num_s: int, ns_causal: bool = False):
  """bool [T', T]: may query i (the last T' of T tokens) attend to key j? (module docstring)."""
  pos = jnp.arange(num_keys - num_queries, num_keys)[:, None]  # absolute query positions
  key = jnp.arange(num_keys)[None, :]
  causal = key <= pos
  if ns_causal:
    return causal
  return jnp.where(pos < num_s, causal, True)


class MixedSelfAttention(nn.Module):
  """Multi-head attention with mixed weights and the S-token causal mask; [T, B, D] -> [T', B, D]."""
  num_heads: int                # attention heads
  num_ns: int                   # m: NS-tokens (the last m tokens)
  token_specific: bool = True   # NS-token-specific Q/K/V/O (S-tokens always share theirs)
  num_queries: int = 0          # pyramid: only the last T' tokens issue queries (0 = all)
  ns_causal: bool = False       # NS-tokens see only earlier NS-tokens (True) or all of them
  dtype: Any = jnp.float32      # computation dtype

  @nn.compact
  def __call__(self, x):
    t, b, d = x.shape
    h = self.num_heads
    qkv = MixedDense(3 * d, self.num_ns, self.token_specific, use_bias=False, dtype=self.dtype,
                     name='qkv')(x)
    q, k, v = (a[:, :, 0] for a in jnp.split(qkv.reshape(t, b, 3, h, d // h), 3, axis=2))
    tq = self.num_queries or t
    q = q[t - tq:]
    logits = jnp.einsum('qbhk,tbhk->bhqt', q, k).astype(jnp.float32) / jnp.sqrt(d // h)
    mask = causal_mask(t, tq, max(t - self.num_ns, 0), self.ns_causal)
    self.sow('intermediates', 'mask', mask)
    probs = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqt,tbhk->qbhk', probs, v).reshape(tq, b, d)
    return MixedDense(d, self.num_ns, self.token_specific, use_bias=False,
                      logical_axes=(layers.MLP, layers.EMBED), dtype=self.dtype, name='out')(out)

  def flops(self, t_in: int, t_out: int, d: int) -> int:
    """Forward FLOPs per example (the masked scores are computed, so counted, in full)."""
    return 2 * (t_in * d * 3 * d + 2 * t_out * t_in * d + t_out * d * d)


class MixedFeedForward(nn.Module):
  """Per-token GELU MLP D -> mult*D -> D, shared by S-tokens, specific to each NS-token."""
  num_ns: int                   # m: NS-tokens (the last m tokens)
  mult: int = 4                 # hidden size = mult * D
  token_specific: bool = True   # NS-token-specific weights (S-tokens always share theirs)
  dtype: Any = jnp.float32      # computation dtype

  @nn.compact
  def __call__(self, x):  # [T, B, D] -> [T, B, D]
    d = x.shape[-1]
    y = nn.gelu(MixedDense(self.mult * d, self.num_ns, self.token_specific, dtype=self.dtype,
                           name='up')(x))
    return MixedDense(d, self.num_ns, self.token_specific, logical_axes=(layers.MLP, layers.EMBED),
                      dtype=self.dtype, name='down')(y)

  def flops(self, t: int, d: int) -> int:
    return 2 * 2 * t * d * self.mult * d
