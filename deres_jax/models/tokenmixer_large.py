"""TokenMixer-Large (ByteDance, arXiv 2602.06563): RankMixer's token mixing made reversible,
per-token SwiGLUs, pre-norm, inter-block skips and auxiliary losses (research/deres.md §4.3).

Tokens: T - 1 group tokens X_0 .. X_{T-2} (the shared tokenizer, e.g. RankMixer's
concat-split-project) and a global token computed from all of them, prepended:
  X_G = W_g Concat(X_0 .. X_{T-2}) + b_g,     X = (X_G, X_0 .. X_{T-2}) in R^{T x D}       (1)
Block l, pre-norm with RMSNorm (connector='prenorm'):
  X <- X + Revert(pSwiGLU(Mix(RMSNorm(X))))        (Mixing-and-Reverting, the token mixer) (2)
  X <- X + pSwiGLU(RMSNorm(X))                     (the per-token FFN)                     (3)
  pSwiGLU_t(x) = W_t,down (Swish(W_t,gate x) * W_t,up x),  W_t,gate/up in R^{d x n d},
  W_t,down ~ N(0, 0.01^2): token-specific weights, d = D in Eq. 3, d = T D / H in Eq. 2     (4)
Mix is RankMixer's multi-head token mixing ([T, D] -> [H, T D / H], `rankmixer.mix`) and
Revert its inverse permutation, so the residual of Eq. 2 adds outputs to inputs in the same
token layout (RankMixer's adds the mixed layout to the unmixed one). H need not equal T.
Inter-block skips, every s blocks: X^(l+s) += X^(l)                                        (5)
Auxiliary loss on the global token of the stream after every intermediate block l < L:
  z_l = MLP_aux(RMSNorm(X^(l)_G)),   L_aux = aux_weight * mean_l BCE(z_l, y)                (6)
  logit = MLP(flatten(RMSNorm(X^(L))))                                                    (7)

Reconstruction choices (the notes leave them open):
- `num_tokens` is T including the global token (the paper's X in R^{T x D}, groups
  G_0 .. G_{T-2}): the tokenizer makes num_tokens - 1 group tokens; with tokenizer='field',
  T = F + 1. MLP_g of Eq. 1 is one Dense layer over the concatenated group tokens (after their
  projection to D, so it works with every tokenizer).
- Eq. 6 supervises the intermediate blocks 1 .. L-1 only (block L feeds the main head), with
  one head shared by all blocks (RMSNorm + MLP `aux_hidden`), averaged over blocks; it runs only
  when training with labels (and at init, to create its parameters), and its logits are sown
  as intermediates 'aux_logits' [L-1, B].
- The W_down std 0.01 of Eq. 4 (stated for the MoE experts) applies to both SwiGLUs.
- The sparse per-token MoE (top-k routing, shared expert) is not implemented.
- Defaults are CPU-sized (T = 8, D = 32, L = 4); the paper scales to 7B parameters online.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
import optax

from deres_jax.models import backbone as backbone_lib
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models import rankmixer
from deres_jax.models.tokenizer import FeatureTokenizer
from deres_jax.models.transformer import BACKBONE_CHOICES
from deres_jax.models.transformer import _naming
from deres_jax.models.transformer import backbone_kwargs


class MixRevert(nn.Module):
  """Eq. 2's mixer: Mix -> per-token SwiGLU on the H mixed tokens -> Revert; [T, B, D] -> same."""
  num_heads: int = 0            # H; 0 = T. Must divide D; the mixed tokens have width T*D/H
  mult: int = 2                 # n: SwiGLU hidden size n * T*D/H
  down_init_std: float = 0.01   # std of the SwiGLU's W_down init (0 = lecun normal)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # [T, B, D]
    t = x.shape[0]
    s = rankmixer.mix(x, self.num_heads or t)  # [H, B, T*D/H]
    s = layers.SwiGLU(self.mult, True, self.down_init_std, self.dtype, name='swiglu')(s)
    return rankmixer.revert(s, t)  # [T, B, D]

  def flops(self, t_in: int, t_out: int, d: int) -> int:
    del t_out
    h = self.num_heads or t_in
    return layers.SwiGLU(self.mult, parent=None).flops(h, t_in * d // h)


class TokenMixerLarge(nn.Module):
  """Tokenizer + global token + L TokenMixer-Large blocks + head: (logits [B], aux)."""
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  # Tokenizer.
  embed_dim: int = 16           # E: embedding size of every field
  tokenizer: str = 'group'      # 'group': RankMixer's concat-split-project; 'field'; 'autosplit'
  num_tokens: int = 8           # T incl. the global token: T - 1 group tokens ('field': T = F + 1)
  dense_transform: str = 'log1p'  # dense x -> sign(x) log(1+|x|) before embedding; or 'none'
  embed_cross: int = 0          # DCNv2 cross layers on the concatenated embeddings before tokens (docs/quality.md)
  # Backbone.
  depth: int = 4                # L: blocks (Mixing-and-Reverting + per-token SwiGLU each)
  width: int = 32               # D: token width; H must divide it
  num_heads: int = 0            # H: mixing heads; 0 = T (the mixed tokens then have width D)
  mix_mult: int = 2             # n of the SwiGLU inside Mixing-and-Reverting (hidden n*T*D/H)
  ffn_mult: int = 2             # n of the per-token SwiGLU FFN (hidden n*D)
  down_init_std: float = 0.01   # std of both SwiGLUs' W_down init, as in the paper (0 = lecun)
  skip_every: int = 2           # s: inter-block skip X^(l+s) += X^(l); 0 = none (paper: 2-3)
  aux_weight: float = 0.1       # weight of the global-token auxiliary BCE of blocks 1..L-1; 0 = off
  aux_hidden: tuple = (32,)     # hidden sizes of the auxiliary head MLP shared by the blocks
  dropout: float = 0.0          # dropout on sublayer outputs
  out_norm: str = 'rms'         # 'rms': RMSNorm on the output tokens; 'none': they keep their scale
  scan_layers: bool = False     # True: nn.scan over the blocks (needs skip_every=0, aux_weight=0)
  # Residual connector (connectors.py, backbone.py, research/deres.md §7.6).
  connector: str = 'prenorm'    # 'prenorm' = the paper's RMSNorm pre-norm; 'deres', 'postnorm', ...
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
  head_pool: str = 'flatten'    # 'flatten' the T tokens (T*D), 'mean'-pool them, or 'global' token
  head_hidden: tuple = (256,)   # hidden sizes of the head MLP
  dtype: Any = jnp.float32      # computation dtype (parameters stay float32)
  table_pad: int = 8

  CHOICES: ClassVar[dict] = dict(BACKBONE_CHOICES, out_norm=('rms', 'none'), head_pool=('flatten', 'mean', 'global'))

  def make_tokenizer(self, name='tokenizer'):
    # The group tokens only: the global token is added by the model (Eq. 1).
    return FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim, self.width,
                            self.tokenizer, self.num_tokens - 1, self.dense_transform,
                            self.table_pad, self.dtype, cross_layers=self.embed_cross,
                            seq_share=self.seq_share, **_naming(name))

  def make_backbone(self, name='backbone'):
    return backbone_lib.Backbone(
        mixer=MixRevert, mixer_kw=dict(num_heads=self.num_heads, mult=self.mix_mult,
                                       down_init_std=self.down_init_std),
        ffn=layers.SwiGLU, ffn_kw=dict(mult=self.ffn_mult, token_specific=True,
                                       down_init_std=self.down_init_std),
        skip_every=self.skip_every, **backbone_kwargs(self), **_naming(name))

  @nn.compact
  def __call__(self, batch, train: bool = False):
    groups, aux = self.make_tokenizer()(batch)  # [B, T-1, D]
    b = groups.shape[0]
    glob = nn.Dense(self.width, dtype=self.dtype, name='global_token')(groups.reshape(b, -1))
    x = jnp.concatenate([glob[:, None], groups], axis=1)  # [B, T, D], Eq. 1
    out, hidden = self.make_backbone()(x.transpose(1, 0, 2), train)  # [T, B, D]; L x [T, B, D]
    pooled = out[0] if self.head_pool == 'global' else layers.pool_tokens(out, self.head_pool)
    logits = layers.MLPHead(self.head_hidden, self.dtype, name='head')(pooled)
    # Eq. 6 at training only; at init too, so that the parameters exist for training.
    if self.aux_weight and self.depth > 1 and (self.is_initializing() or
                                               (train and 'label' in batch)):
      norm = layers.RMSNorm(name='aux_norm')
      head = layers.MLPHead(self.aux_hidden, self.dtype, name='aux_head')
      aux_logits = jnp.stack([head(norm(h[0])) for h in hidden[:-1]]).astype(jnp.float32)
      self.sow('intermediates', 'aux_logits', aux_logits)  # [L-1, B]
      if 'label' in batch:
        label = batch['label'].astype(jnp.float32)
        bce = optax.sigmoid_binary_cross_entropy(aux_logits, label[None]).mean()
        aux = dict(aux, losses={'tml_aux': self.aux_weight * bce})
    return logits.astype(jnp.float32), aux

  def check(self):
    t = self.make_tokenizer(name=None).num_output_tokens() + 1
    h = self.num_heads or t
    if self.tokenizer != 'field' and self.num_tokens < 2:
      raise ValueError(f'num_tokens={self.num_tokens} counts the global token too: use at '
                       'least 2 (one group token).')
    if self.width % h:
      raise ValueError(f'the H={h} mixing heads (num_heads={self.num_heads}, T={t}) do not '
                       f'divide width={self.width}.')
    if self.aux_weight < 0:
      raise ValueError(f'aux_weight={self.aux_weight} must be >= 0 (0 turns the loss off).')
    if self.aux_weight and self.scan_layers:
      raise ValueError('the auxiliary loss reads the stream after every block, which needs '
                       'scan_layers=False (or aux_weight=0).')
    if self.aux_weight and not self.make_backbone(name=None).has_stream():
      raise ValueError(f'the auxiliary loss reads the identity stream, which connector='
                       f"{self.connector!r} lacks (attnres: unless value='hidden'); or set aux_weight=0.")
    if self.skip_every > self.depth:
      raise ValueError(f'skip_every={self.skip_every} exceeds depth={self.depth}, so no skip '
                       'would be added; use 0 to turn skips off.')
    self.make_backbone(name=None).check()

  def flops_per_example(self) -> dict:
    tok = self.make_tokenizer(name=None)
    t, d = tok.num_output_tokens() + 1, self.width
    mixer = MixRevert(self.num_heads, self.mix_mult, parent=None)
    ffn = layers.SwiGLU(self.ffn_mult, True, parent=None)
    aux_blocks = self.depth - 1 if self.aux_weight else 0
    pooled = t * d if self.head_pool == 'flatten' else d
    return flops_lib.total({
        'tokenizer': tok.flops(),
        'global_token': flops_lib.dense((t - 1) * d, d),
        'mixer': self.depth * mixer.flops(t, t, d),
        'ffn': self.depth * ffn.flops(t, d),
        'connectors': self.make_backbone(name=None).connector_flops([t] * self.depth, d),
        'head': layers.head_flops(pooled, self.head_hidden),
        # Training only (the auxiliary head does not run at eval).
        'aux_head': aux_blocks * layers.head_flops(d, self.aux_hidden),
    })
