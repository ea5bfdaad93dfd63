"""Transformer sublayers for CTR token sequences: RMSNorm, self-attention, per-token FFN.

Shapes: B = batch, T = tokens (features or feature groups), D = width, H = heads.
Activations are token-major, [T, B, D]: a token-specific projection is then a batched matmul
over the leading T axis with no transposes (on CPU this made the per-token FFN 2.3x faster
than [B, T, D]; see benchmarks/README.md).
"Token-specific" weights follow OneTrans (arXiv 2510.26104) and RankMixer: every
non-sequential token has its own projection, because each token is a different feature
with its own semantics; "shared" is the usual Transformer parameterisation.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Logical axis names (mapped to mesh axes by `config.sharding_rules`).
# 'vocab' is the row axis of embedding tables, the one worth sharding over 'model'.
EMBED = 'embed'
MLP = 'mlp'
TOKENS = 'tokens'


def rms_normalize(x, eps: float = 1e-6):
  """x / RMS(x) over the last axis, computed in float32 (no learned scale)."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return y.astype(x.dtype)


class RMSNorm(nn.Module):
  """RMSNorm with a learned per-dimension scale initialised to one."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):  # [..., D]
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, (EMBED,)),
                       (x.shape[-1],), jnp.float32)
    return rms_normalize(x, self.eps) * scale.astype(x.dtype)


class TokenDense(nn.Module):
  """Dense layer that is either shared by all tokens or specific to each token.

  Input and output are token-major [T, B, D]. With `token_specific=True` the kernel is
  [T, D_in, D_out] and token t uses its own slice ('tbd,tdk->tbk'); otherwise a single
  [D_in, D_out] kernel ('tbd,dk->tbk').
  """
  features: int
  token_specific: bool = True
  use_bias: bool = True
  logical_axes: tuple = (EMBED, MLP)  # names of (D_in, D_out)
  dtype: Dtype = jnp.float32          # computation dtype
  kernel_init: Any = None             # None: lecun normal over D_in (per token if specific)

  @nn.compact
  def __call__(self, x):  # [T, B, D_in]
    t, d_in = x.shape[0], x.shape[-1]
    if self.token_specific:
      # lecun_normal over (D_in) fan-in: batch_axis=0 keeps T out of the fan computation.
      init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', batch_axis=(0,))
      if self.kernel_init is not None:  # an explicit init (e.g. normal(0.01)) applies as given
        init = self.kernel_init
      kernel = self.param('kernel', nn.with_logical_partitioning(init, (TOKENS,) + self.logical_axes),
                          (t, d_in, self.features), jnp.float32)
      y = jnp.einsum('tbd,tdk->tbk', x, kernel.astype(self.dtype))
      bias_shape, bias_axes = (t, self.features), (TOKENS, self.logical_axes[1])
    else:
      init = self.kernel_init or nn.initializers.lecun_normal()
      kernel = self.param('kernel', nn.with_logical_partitioning(init, self.logical_axes),
                          (d_in, self.features), jnp.float32)
      y = jnp.einsum('tbd,dk->tbk', x, kernel.astype(self.dtype))
      bias_shape, bias_axes = (self.features,), (self.logical_axes[1],)
    if self.use_bias:
      bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, bias_axes),
                        bias_shape, jnp.float32)
      y = y + (bias[:, None] if self.token_specific else bias).astype(self.dtype)
    return y


def _out_init(zero: bool) -> dict:
  """Kernel init of a sublayer's output projection: zeros (the residual branch starts silent)
  or the layer's default."""
  return dict(kernel_init=nn.initializers.zeros) if zero else {}


class SelfAttention(nn.Module):
  """Multi-head self-attention over the T feature tokens (no mask: tokens are a set).

  num_queries = T' > 0 (OneTrans's pyramid): only the last T' tokens issue queries, keys and
  values come from all T tokens, and the output has T' tokens.
  """
  num_heads: int
  token_specific: bool = True  # OneTrans-style token-specific Q/K/V/O projections
  num_queries: int = 0         # 0 = every token
  dtype: Dtype = jnp.float32
  zero_out: bool = False       # the output projection starts at zero (backbone branch_init='zero')

  @nn.compact
  def __call__(self, x):  # [T, B, D] -> [T', B, D]
    t, b, d = x.shape
    h = self.num_heads
    qkv = TokenDense(3 * d, self.token_specific, use_bias=False, dtype=self.dtype, name='qkv')(x)
    q, k, v = jnp.split(qkv.reshape(t, b, 3, h, d // h), 3, axis=2)  # each [T, B, 1, H, Dh]
    q, k, v = (a[:, :, 0] for a in (q, k, v))
    if self.num_queries:
      q, t = q[-self.num_queries:], self.num_queries
    logits = jnp.einsum('qbhk,tbhk->bhqt', q, k).astype(jnp.float32) / jnp.sqrt(d // h)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqt,tbhk->qbhk', probs, v).reshape(t, b, d)
    return TokenDense(d, self.token_specific, use_bias=False, logical_axes=(MLP, EMBED),
                      dtype=self.dtype, name='out', **_out_init(self.zero_out))(out)

  def flops(self, t_in: int, t_out: int, d: int) -> int:
    """Forward FLOPs per example: QKV, scores, weighted values, output projection."""
    return 2 * (t_in * d * 3 * d + 2 * t_out * t_in * d + t_out * d * d)


class FeedForward(nn.Module):
  """Per-token two-layer MLP D -> mult*D -> D with GELU (RankMixer's per-token FFN)."""
  mult: int = 4
  token_specific: bool = True
  dtype: Dtype = jnp.float32
  zero_out: bool = False       # the down projection starts at zero (backbone branch_init='zero')

  @nn.compact
  def __call__(self, x):  # [T, B, D] -> [T, B, D]
    d = x.shape[-1]
    y = TokenDense(self.mult * d, self.token_specific, dtype=self.dtype, name='up')(x)
    y = nn.gelu(y)
    return TokenDense(d, self.token_specific, logical_axes=(MLP, EMBED), dtype=self.dtype,
                      name='down', **_out_init(self.zero_out))(y)

  def flops(self, t: int, d: int) -> int:
    return 2 * 2 * t * d * self.mult * d


class SwiGLU(nn.Module):
  """Per-token SwiGLU FFN (TokenMixer-Large's pSwiGLU, UniMixer): FC_down(Swish(FC_gate x) * FC_up x).

  Token-specific weights W^t in R^{D x nD} by default; the down projection may start small
  (TokenMixer-Large initialises it with std 0.01).
  """
  mult: int = 2                  # n: hidden size n*D
  token_specific: bool = True
  down_init_std: float = 0.0     # > 0: normal(std) init of FC_down; 0 = lecun normal
  dtype: Dtype = jnp.float32
  zero_out: bool = False         # FC_down starts at zero (backbone branch_init='zero'; overrides down_init_std)

  @nn.compact
  def __call__(self, x):  # [T, B, D] -> [T, B, D]
    d = x.shape[-1]
    gate_up = TokenDense(2 * self.mult * d, self.token_specific, dtype=self.dtype, name='gate_up')(x)
    gate, up = jnp.split(gate_up, 2, axis=-1)
    down = {} if not self.down_init_std else dict(
        kernel_init=nn.initializers.normal(self.down_init_std))
    down = _out_init(True) if self.zero_out else down
    return TokenDense(d, self.token_specific, logical_axes=(MLP, EMBED), dtype=self.dtype,
                      name='down', **down)(nn.silu(gate) * up)

  def flops(self, t: int, d: int) -> int:
    return 2 * 3 * t * d * self.mult * d


def pool_tokens(out, mode: str):
  """[T, B, D] -> the head's input: 'flatten' [B, T*D] or 'mean' [B, D]."""
  if mode == 'flatten':
    return out.transpose(1, 0, 2).reshape(out.shape[1], -1)
  return out.mean(axis=0)


def head_flops(d_in: int, hidden: tuple) -> int:
  """Forward FLOPs per example of `MLPHead(hidden)` on a d_in vector."""
  dims = (d_in,) + tuple(hidden) + (1,)
  return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))


class MLPHead(nn.Module):
  """ReLU MLP on a [B, F] vector, ending in one logit per example."""
  hidden: tuple = (256,)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, F] -> [B]
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
    return nn.Dense(1, dtype=jnp.float32, name='logit')(x)[..., 0]
