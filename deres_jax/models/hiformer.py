"""HiFormer (Gui et al., arXiv 2311.05884): heterogeneous self-attention + composite projection.

HiFormer's premise is that feature interactions are heterogeneous: "user country x item
category" is not the same relation as "hour x app id", so one shared Q/K/V projection for all
feature tokens is too restrictive (research/deres.md §4.6). Its heterogeneous attention layer
gives every token t its own projections (token-major x [T, B, D], H heads of D/H):

    Q_t = x_t W_t^Q,  K_t = x_t W_t^K,  V_t = x_t W_t^V,                               (1)
    o_t = concat_h softmax_s(Q_t^h K_s^h / sqrt(D/H)) V_s^h,                           (2)

and HiFormer's composite projection then maps the concatenated attention outputs of *all*
tokens jointly, so the output of token t mixes what every token attended to:

    [y_1 .. y_T] = concat(o_1 .. o_T) W^O,   W^O in R^{TD x TD}.                        (3)

W^O has (TD)^2 parameters; HiFormer's low-rank approximation (for serving latency) factors it,
W^O ~ V U with V in R^{TD x r}, U in R^{r x TD} (`low_rank` = r > 0; 0 = full rank), so (3)
costs 4 TD r instead of 2 (TD)^2 FLOPs. The FFN is a per-token GELU MLP (layers.FeedForward),
and the residual is pluggable (backbone connector; PreNorm by default).

Choices this reconstruction makes:
  * the composite projection is applied to the output side only (eq. 3); the paper's fuller
    variant also forms composite keys/values from the concatenated tokens, not done here;
  * the per-token FFN is token-specific (RankMixer/OneTrans style), `ffn='shared'` to share;
  * HiFormer's pruning of the last layer to the task token's query is left out: the head
    reads all T tokens (head_pool), as in the other backbone models.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import backbone as backbone_lib
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models.tokenizer import FeatureTokenizer
from deres_jax.models.transformer import BACKBONE_CHOICES, _naming, backbone_kwargs


class HeterogeneousAttention(nn.Module):
  """Eqs. (1)-(3) on x [T, B, D]: token-specific Q/K/V, composite (optionally low-rank) W^O."""
  num_heads: int = 4   # H; must divide D
  low_rank: int = 0    # r of W^O = V U; 0 = the full [T*D, T*D] matrix
  dtype: Any = jnp.float32
  zero_out: bool = False  # the (last) output projection starts at zero (backbone branch_init='zero')

  @nn.compact
  def __call__(self, x):  # [T, B, D] -> [T, B, D]
    t, b, d = x.shape
    h = self.num_heads
    # Eq. (1): a [T, D, 3D] kernel, token t's slice its own W_t^Q, W_t^K, W_t^V.
    qkv = layers.TokenDense(3 * d, True, use_bias=False, dtype=self.dtype, name='qkv')(x)
    q, k, v = (a[:, :, 0] for a in jnp.split(qkv.reshape(t, b, 3, h, d // h), 3, axis=2))
    logits = jnp.einsum('qbhk,tbhk->bhqt', q, k).astype(jnp.float32) / jnp.sqrt(d // h)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum('bhqt,tbhk->bqhk', probs, v).reshape(b, t * d)  # eq. (2), concat(o_t)
    # Eq. (3): one projection of all tokens' outputs together.
    kernel = dict(dtype=self.dtype, use_bias=False, kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (layers.MLP, layers.EMBED)))
    last = dict(kernel, kernel_init=nn.with_logical_partitioning(
        nn.initializers.zeros, (layers.MLP, layers.EMBED))) if self.zero_out else kernel
    if self.low_rank:
      out = nn.Dense(self.low_rank, name='out_v', **kernel)(out)  # [B, r]
      out = nn.Dense(t * d, name='out_u', **last)(out)            # [B, T*D]
    else:
      out = nn.Dense(t * d, name='out', **last)(out)
    return out.reshape(b, t, d).transpose(1, 0, 2)

  def flops(self, t_in: int, t_out: int, d: int) -> int:
    """Forward FLOPs per example: QKV, scores, weighted values, composite projection."""
    del t_out  # = t_in
    r = self.low_rank
    out = 2 * 2 * t_in * d * r if r else 2 * (t_in * d) ** 2
    return 2 * (t_in * d * 3 * d + 2 * t_in * t_in * d) + out


class HiFormer(nn.Module):
  """Tokenizer + HiFormer blocks (heterogeneous attention, per-token FFN) + head."""
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  # Tokenizer.
  embed_dim: int = 16           # E: embedding size of every field
  tokenizer: str = 'group'      # 'group' (RankMixer groups), 'field' (a token each), 'autosplit'
  num_tokens: int = 8           # T when tokenizer is 'group' or 'autosplit'
  dense_transform: str = 'log1p'  # dense x -> sign(x) log(1+|x|) before embedding; or 'none'
  embed_cross: int = 0          # DCNv2 cross layers on the concatenated embeddings before tokens (docs/quality.md)
  # Backbone.
  depth: int = 2                # L: HiFormer blocks (heterogeneous attention + FFN each)
  width: int = 32               # D: token width
  num_heads: int = 4            # attention heads; must divide width
  low_rank: int = 0             # r of the composite W^O ~ V U (T*D -> r -> T*D); 0 = full rank
  ffn_mult: int = 2             # FFN hidden size = ffn_mult * width
  ffn: str = 'token'            # 'token': a GELU FFN per token; 'shared' by all tokens
  dropout: float = 0.0          # dropout on sublayer outputs
  out_norm: str = 'rms'         # 'rms': RMSNorm on the output tokens; 'none': they keep their scale
  scan_layers: bool = False     # True: nn.scan over stacked blocks (compile time flat in depth)
  # Residual connector (connectors.py, backbone.py, research/deres.md §7.6).
  connector: str = 'prenorm'    # 'prenorm' | 'postnorm' | 'siamese' | 'attnres' | 'deres'
  layer_unit: str = 'sublayer'  # A1: 'sublayer' = a connector per attention and FFN; 'block'
  block_size: int = 4           # A2: connected units per AttnRes block (1 = Full AttnRes)
  value: str = 'output'         # A3: a block stores its units' output sum, or 'hidden' (stream h)
  depth_weights: str = 'auto'   # A6: 'auto' (attnres softmax, deres silu), softmax, silu, sigmoid
  pointwise_norm: str = 'num_sources'  # A6: pointwise weights / visible sources, or 'none'
  key_norm: bool = True         # A6: RMSNorm on the keys (never on the values), as in AttnRes
  query: str = 'shared'         # A7: pseudo-query per unit 'shared' by tokens, or per 'token'
  merge: str = 'gated'          # A4: 'gated' g*h + (1-g)*a (default); 'additive' h + a; 'add' h + g*a
  gate: str = 'vector'          # A5: g = sigmoid(theta): 'vector' (R^D), 'scalar' or 'none' (g = 1)
  gate_init: float = 0.0        # A5: initial theta (0 -> g = 0.5)
  # Head.
  head_pool: str = 'flatten'    # 'flatten' the T tokens (T*D) or 'mean'-pool them (D)
  head_hidden: tuple = (256,)   # hidden sizes of the head MLP
  dtype: Any = jnp.float32      # computation dtype (parameters stay float32)
  table_pad: int = 8

  CHOICES: ClassVar[dict] = dict(BACKBONE_CHOICES, out_norm=('rms', 'none'), ffn=('token', 'shared'))

  def make_tokenizer(self, name='tokenizer'):
    return FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim, self.width,
                            self.tokenizer, self.num_tokens, self.dense_transform, self.table_pad,
                            self.dtype, cross_layers=self.embed_cross, seq_share=self.seq_share, **_naming(name))

  def make_backbone(self, name='backbone'):
    return backbone_lib.Backbone(
        mixer=HeterogeneousAttention, mixer_kw=dict(num_heads=self.num_heads,
                                                    low_rank=self.low_rank),
        ffn=layers.FeedForward, ffn_kw=dict(mult=self.ffn_mult, token_specific=self.ffn == 'token'),
        **backbone_kwargs(self), **_naming(name))

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = self.make_tokenizer()(batch)  # [B, T, D]
    out, _ = self.make_backbone()(emb.transpose(1, 0, 2), train)  # token-major [T, B, D]
    logits = layers.MLPHead(self.head_hidden, self.dtype, name='head')(
        layers.pool_tokens(out, self.head_pool))
    return logits.astype(jnp.float32), aux

  def check(self):
    if self.width % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} does not divide width={self.width}.')
    t = self.make_tokenizer(name=None).num_output_tokens()
    if not 0 <= self.low_rank <= t * self.width:
      raise ValueError(f'low_rank={self.low_rank} must be in [0, T*D = {t * self.width}] '
                       f'(T={t} tokens of width {self.width}; 0 = full rank).')
    self.make_backbone(name=None).check()

  def flops_per_example(self) -> dict:
    tok = self.make_tokenizer(name=None)
    t, d = tok.num_output_tokens(), self.width
    attn = HeterogeneousAttention(self.num_heads, self.low_rank, parent=None)
    ffn = layers.FeedForward(self.ffn_mult, self.ffn == 'token', parent=None)
    return flops_lib.total({
        'tokenizer': tok.flops(),
        'attention': self.depth * attn.flops(t, t, d),
        'ffn': self.depth * ffn.flops(t, d),
        'connectors': self.make_backbone(name=None).connector_flops([t] * self.depth, d),
        'head': layers.head_flops(t * d if self.head_pool == 'flatten' else d, self.head_hidden),
    })
