"""RankMixer (Zhu et al., ByteDance, CIKM 2025, arXiv 2507.15551): parameter-free token mixing
and per-token FFNs, on the shared backbone (`backbone.py`; research/deres.md §4.2).

Tokens: the field embeddings are concatenated, split into T equal segments and each segment
is projected to D by its own weights (tokenizer='group'):
  x_t = Concat(e_1 .. e_F)[segment t] W_t + b_t,     X = (x_1 .. x_T) in R^{T x D}        (1)
Multi-head token mixing (no parameters): every token splits into H heads of width D/H and
output token h concatenates the h-th head of every token,
  x_t = [x_t^(1) | .. | x_t^(H)],     s_h = [x_1^(h) | .. | x_T^(h)] in R^{T D / H}        (2)
With H = T (the published choice) S = (s_1 .. s_T) again has T tokens of width D, and the
block is post-LN (connector='postnorm'):
  S = LN(TokenMixing(X) + X),     X' = LN(PFFN(S) + S)                                    (3)
  PFFN_t(s) = W_t2 GELU(W_t1 s + b_t1) + b_t2,     W_t1 in R^{D x kD}, one per token t    (4)
  logit = MLP(flatten(RMSNorm(X^(L))))                                                    (5)
Eq. 2 is a fixed permutation of the T*D entries; with H = T it is a transpose of the
[T, H] grid of D/H-wide heads, so applying it twice is the identity.

Reconstruction choices (the paper leaves them open or this library differs):
- H must equal T (`num_heads=0` means T): every published configuration has H = T, and with
  H != T the mixed sequence has H tokens of width T*D/H, which the residual in Eq. 3 cannot add
  to X without a projection the paper does not describe.
- connector='postnorm' is Eq. 3; any other connector ('prenorm', 'deres', ...) replaces post-LN
  by its pre-norm form h + f(RMSNorm(h)), the variant TokenMixer-Large argues for.
- Eq. 5's RMSNorm is the backbone's output norm, shared by every model of the zoo.
- Equal segments (Eq. 1) rather than semantic groups: the data schema holds no feature-to-group
  map. The Sparse-MoE variant of the PFFN (ReLU routing, DTSI) is not implemented.
- `mix_scale='zero'` (ours, off by default): the mixing branch is multiplied by a per-dimension
  scale started at 0 (LayerScale, Touvron et al. 2021), so under a pre-norm connector the whole
  block is the identity at init as `branch_init='zero'` makes the FFN; the parameter-free mixing
  otherwise adds a unit-scale permuted copy of the normalised stream from step 0.
- Defaults are CPU-sized (T = 8, D = 32); the paper's RankMixer-100M has T = 16, D = 768,
  H = 16, L = 2, k = 4 (RankMixer-1B: T = 32, D = 1536).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import backbone as backbone_lib
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models.tokenizer import FeatureTokenizer
from deres_jax.models.transformer import BACKBONE_CHOICES
from deres_jax.models.transformer import _naming
from deres_jax.models.transformer import backbone_kwargs


def mix(x, num_heads: int):
  """Eq. 2: [T, B, D] -> [H, B, T*D/H]; output token h is the h-th head of every token."""
  t, b, d = x.shape
  heads = x.reshape(t, b, num_heads, d // num_heads)  # [T, B, H, D/H]
  return heads.transpose(2, 1, 0, 3).reshape(num_heads, b, t * d // num_heads)


def revert(s, num_tokens: int):
  """The inverse permutation of `mix`: [H, B, T*D/H] -> [T, B, D]."""
  h, b, w = s.shape
  parts = s.reshape(h, b, num_tokens, w // num_tokens)  # [H, B, T, D/H]
  return parts.transpose(2, 1, 0, 3).reshape(num_tokens, b, h * w // num_tokens)


class TokenMixing(nn.Module):
  """Eq. 2 as a backbone mixer, [T, B, D] -> [T, B, D] (H = T); no parameters unless scaled."""
  num_heads: int = 0            # H; 0 = T, the only value whose output has T tokens
  scale: str = 'none'           # 'none' (Eq. 2) or 'zero': times a per-dim LayerScale started at 0
  dtype: Any = jnp.float32      # unused (a permutation computes nothing), kept for the backbone

  @nn.compact
  def __call__(self, x):  # [T, B, D]
    t, _, d = x.shape
    h = self.num_heads or t
    if h != t or d % h:
      raise ValueError(f'token mixing needs H = T heads dividing D; got H={h}, T={t}, D={d}.')
    out = mix(x, h)
    if self.scale == 'zero':
      out = out * self.param('layer_scale', nn.initializers.zeros, (d,), jnp.float32).astype(out.dtype)
    return out

  def flops(self, t_in: int, t_out: int, d: int) -> int:
    del t_in, t_out, d
    return 0  # a permutation: data movement only


class RankMixer(nn.Module):
  """Tokenizer + L RankMixer blocks (token mixing, per-token FFN) + head: (logits [B], aux)."""
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  # Tokenizer.
  embed_dim: int = 16           # E: embedding size of every field
  tokenizer: str = 'group'      # 'group': concat-split-project (Eq. 1); 'field'; 'autosplit'
  num_tokens: int = 8           # T when tokenizer is 'group' or 'autosplit' (paper: 16)
  dense_transform: str = 'log1p'  # dense x -> sign(x) log(1+|x|) before embedding; or 'none'
  embed_cross: int = 0          # DCNv2 cross layers on the concatenated embeddings before tokens (docs/quality.md)
  # Backbone.
  depth: int = 2                # L: RankMixer blocks (token mixing + per-token FFN each; paper: 2)
  width: int = 32               # D: token width; T must divide it (paper: 768)
  num_heads: int = 0            # H: mixing heads; 0 = T, the published choice (H must equal T)
  ffn_mult: int = 4             # k: per-token FFN hidden size k * D (paper: 4)
  mix_scale: str = 'none'       # 'none' (paper) or 'zero': LayerScale at 0 on the mixing branch (ours)
  dropout: float = 0.0          # dropout on sublayer outputs
  out_norm: str = 'rms'         # 'rms': RMSNorm on the output tokens; 'none': they keep their scale
  scan_layers: bool = False     # True: nn.scan over stacked blocks (compile time flat in depth)
  # Residual connector (connectors.py, backbone.py, research/deres.md §7.6).
  connector: str = 'postnorm'   # 'postnorm' = published post-LN (Eq. 3); 'prenorm', 'deres', ...
  layer_unit: str = 'sublayer'  # A1: 'sublayer' = a connector per mixer and FFN; 'block'
  block_size: int = 4           # A2: connected units per AttnRes block (1 = Full AttnRes)
  value: str = 'output'         # A3: a block stores its units' output sum, or 'hidden' (stream h)
  depth_weights: str = 'auto'   # A6: 'auto' (attnres softmax, deres silu), softmax, silu, sigmoid
  pointwise_norm: str = 'num_sources'  # A6: pointwise weights / visible sources count, or 'none'
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

  CHOICES: ClassVar[dict] = dict(BACKBONE_CHOICES, out_norm=('rms', 'none'), mix_scale=('none', 'zero'))

  def make_tokenizer(self, name='tokenizer'):
    return FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim, self.width,
                            self.tokenizer, self.num_tokens, self.dense_transform, self.table_pad,
                            self.dtype, cross_layers=self.embed_cross, seq_share=self.seq_share, **_naming(name))

  def make_backbone(self, name='backbone'):
    return backbone_lib.Backbone(
        mixer=TokenMixing, mixer_kw=dict(num_heads=self.num_heads, scale=self.mix_scale),
        ffn=layers.FeedForward, ffn_kw=dict(mult=self.ffn_mult, token_specific=True),
        **backbone_kwargs(self), **_naming(name))

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = self.make_tokenizer()(batch)  # [B, T, D]
    out, _ = self.make_backbone()(emb.transpose(1, 0, 2), train)  # [T, B, D]
    logits = layers.MLPHead(self.head_hidden, self.dtype, name='head')(
        layers.pool_tokens(out, self.head_pool))
    return logits.astype(jnp.float32), aux

  def check(self):
    t = self.make_tokenizer(name=None).num_output_tokens()
    if self.num_heads not in (0, t):
      raise ValueError(f'num_heads={self.num_heads} must equal the T={t} tokens (or be 0): with '
                       'H != T token mixing changes the token count and the residual cannot add.')
    if self.width % t:
      raise ValueError(f'width={self.width} is not divisible by the T={t} tokens, which token '
                       'mixing splits every token into (T heads of width/T).')
    self.make_backbone(name=None).check()

  def flops_per_example(self) -> dict:
    tok = self.make_tokenizer(name=None)
    t, d = tok.num_output_tokens(), self.width
    ffn = layers.FeedForward(self.ffn_mult, True, parent=None)
    return flops_lib.total({
        'tokenizer': tok.flops(),
        'mixer': self.depth * TokenMixing(self.num_heads, parent=None).flops(t, t, d),
        'ffn': self.depth * ffn.flops(t, d),
        'connectors': self.make_backbone(name=None).connector_flops([t] * self.depth, d),
        'head': layers.head_flops(t * d if self.head_pool == 'flatten' else d, self.head_hidden),
    })
