"""CTR Transformer (the DeRes flagship): tokenizer -> L blocks -> pooled MLP head.

The blocks are the shared backbone (`backbone.py`) with multi-head self-attention as the token
mixer and a per-token GELU FFN, RMSNorm pre-norm inside each sublayer:
    attn_out = Attn(RMSNorm(u_mix)),   ffn_out = FFN(RMSNorm(u_ffn)),
where u_* are the connector's inputs (for PreNorm: the running stream h). The residual design
is pluggable (`connector`: any of `connectors.CONNECTORS`, or 'postnorm' | 'siamese'); the
default is DeRes (arXiv 2606.07980, reconstructed in research/deres.md §7): an Identity path
and a Block AttnRes path with Pointwise (SiLU) depth weights merged by a vector gate.

With `scan_layers=True` the L blocks are applied with `nn.scan` over stacked parameters
(parameters get a leading 'layers' axis) so compile time does not grow with depth; for
AttnRes/DeRes, applying the model (after init) runs `source_scan.scan_blocks` on the same
parameters, whose gradient does not store the depth-source buffer per block. The default,
`scan_layers=False`, unrolls the blocks: faster steps at moderate depth.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import backbone as backbone_lib
from deres_jax.models import connectors as connectors_lib
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models.logreg import LogisticRegression
from deres_jax.models.tokenizer import FeatureTokenizer

# Choices shared by every model built on the backbone with attention-style connectors.
BACKBONE_CHOICES = {
    'tokenizer': ('field', 'group', 'autosplit'),
    'dense_transform': ('log1p', 'none'),
    'head_pool': ('flatten', 'mean'),
    'connector': backbone_lib.KINDS,
    'layer_unit': ('sublayer', 'block'),
    'value': ('output', 'hidden'),
    'depth_weights': ('auto', 'softmax', 'silu', 'sigmoid'),
    'pointwise_norm': ('num_sources', 'none'),
    'query': ('shared', 'token'),
    'merge': connectors_lib.MERGES,
    'gate': ('vector', 'scalar', 'none'),
}
# The DeRes ablation fields (CONNECTOR_EXTRA_FIELDS) of the models that declare them.
ABLATION_CHOICES = {
    'paths': ('both', 'identity', 'attnres'),
    'identity': ('fixed', 'rezero', 'layerscale', 'highway', 'matrix'),
    'depth_mix': ('auto', 'fused', 'reference'),
}

# The connector fields every Transformer-family model passes to the backbone.
CONNECTOR_FIELDS = ('connector', 'layer_unit', 'block_size', 'value', 'depth_weights',
                    'pointwise_norm', 'key_norm', 'query', 'merge', 'gate', 'gate_init')
# Fields of the newer connectors and DeRes ablations: models that do not declare them run with
# the backbone's defaults.
CONNECTOR_EXTRA_FIELDS = ('paths', 'identity', 'hc_rate', 'hc_dynamic', 'mhc_sinkhorn_iters',
                          'mhc_res_init', 'layerscale_init', 'highway_bias', 'query_init_scale', 'depth_mix',
                          'branch_init', 'out_norm')


def backbone_kwargs(model) -> dict:
  """The connector and loop fields of a Transformer-family model, for `backbone.Backbone`."""
  kw = {k: getattr(model, k) for k in CONNECTOR_FIELDS}
  kw.update({k: getattr(model, k) for k in CONNECTOR_EXTRA_FIELDS if hasattr(model, k)})
  return dict(kw, depth=model.depth, dropout=model.dropout, scan_layers=model.scan_layers,
              dtype=model.dtype)


def first_order_logit(model, batch):
  """The first-order path's logit [B]: logistic regression (models/logreg.py) on the raw fields.

  logit = head(blocks(tokens)) + b + sum_f w_f[id_f] + sum_k a_k t(x_k) when `first_order`:
  the Wide & Deep / DeepFM linear part. Its weights are zero at init (the model starts as
  without it) and live in a table named 'embedding' (the embedding optimizer and L2 apply).
  Call it inside the model's compact __call__ (it creates the 'first_order' submodule).
  """
  return _first_order_module(model, 'first_order')(batch)[0]


def first_order_flops(model) -> dict:
  """{'first_order': FLOPs} of the first-order path plus its add to the logit, or {}."""
  if not getattr(model, 'first_order', False):
    return {}
  return {'first_order': _first_order_module(model, None).flops_per_example()['total'] + 1}


def _first_order_module(model, name):
  """The first-order path's LogisticRegression on the model's fields (named, or unbound)."""
  return LogisticRegression(model.vocab_sizes, model.num_dense, model.seq_share, model.dense_transform,
                            model.table_pad, **_naming(name))


def _naming(name):
  """A child module's name, or an unbound module (name=None) for checks and FLOPs counts."""
  return dict(name=name) if name else dict(parent=None)


class CTRTransformer(nn.Module):
  """Tokenizer + backbone + head. Returns (logits [B], aux dict)."""
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  # Tokenizer.
  embed_dim: int = 16           # E: embedding size of every field
  tokenizer: str = 'field'      # 'field': a token per field; 'group': RankMixer groups; 'autosplit': OneTrans
  num_tokens: int = 8           # T when tokenizer is 'group' or 'autosplit'
  dense_transform: str = 'log1p'  # dense x -> sign(x) log(1+|x|) before embedding; or 'none'
  embed_cross: int = 0          # DCNv2 cross layers on the concatenated embeddings before tokens (docs/quality.md)
  # Backbone.
  depth: int = 2                # L: Transformer blocks (attention + per-token FFN each)
  width: int = 32               # D: token width
  num_heads: int = 4            # attention heads; must divide width
  ffn_mult: int = 2             # FFN hidden size = ffn_mult * width
  qkv: str = 'token'            # 'token': OneTrans token-specific Q/K/V/O; 'shared'
  ffn: str = 'token'            # 'token': per-token FFN (RankMixer/OneTrans); 'shared'
  ffn_act: str = 'gelu'         # 'gelu' MLP, or 'swiglu' (gated: products of features, docs/quality.md)
  dropout: float = 0.0          # dropout on sublayer outputs
  branch_init: str = 'zero'     # 'zero': sublayer output projections start at 0 (blocks start as identity); 'default'
  out_norm: str = 'rms'         # 'rms': RMSNorm on the output tokens; 'none': they keep their scale
  scan_layers: bool = False     # True: nn.scan over stacked blocks (compile time flat in depth)
  # Residual connector (connectors.py, backbone.py, research/deres.md §7.6).
  connector: str = 'deres'      # prenorm|postnorm|rezero|layerscale|highway|hc|mhc|denseformer|attnres|deres|siamese
  layer_unit: str = 'sublayer'  # A1: 'sublayer' = a connector per attention and FFN; 'block'
  block_size: int = 4           # A2: connected units per AttnRes block (1 = Full AttnRes)
  value: str = 'output'         # A3: a block stores its units' output sum, or 'hidden' (stream h)
  depth_weights: str = 'auto'   # A6: 'auto' (softmax for attnres, silu for deres), 'softmax', 'silu', 'sigmoid'
  pointwise_norm: str = 'num_sources'  # A6: pointwise weights / number of visible sources, or 'none'
  key_norm: bool = True         # A6: RMSNorm on the keys (never on the values), as in AttnRes
  query: str = 'shared'         # A7: pseudo-query per unit 'shared' by tokens, or per 'token'
  query_init_scale: float = 0.0  # A6: pseudo-queries ~ N(0, (scale/sqrt(D))^2) at init; 0 = zeros (AttnRes)
  depth_mix: str = 'auto'       # 'auto' (fused depth attention on GPU/TPU, reference on CPU), 'fused', 'reference'
  merge: str = 'gated'          # A4: 'gated' g*h + (1-g)*a (default); 'additive' h + a; 'add' h + g*a
  gate: str = 'vector'          # A5: g = sigmoid(theta): 'vector' (R^D), 'scalar' or 'none' (g = 1)
  gate_init: float = 0.0        # A5: initial theta (0 -> g = 0.5); ~ +3 starts a 'gated' merge near identity
  paths: str = 'both'           # DeRes ablation: 'both' paths, the 'identity' path only or the 'attnres' path only
  identity: str = 'fixed'       # A9: h + f ('fixed'), 'rezero'|'layerscale'|'highway'|'matrix' (h M + f)
  hc_rate: int = 4              # hc/mhc: n residual streams (HC x4, mHC n = 4)
  hc_dynamic: bool = True       # hc: input-dependent (DHC) mixing on top of the static matrices; False = static HC
  mhc_sinkhorn_iters: int = 20  # mhc: Sinkhorn-Knopp iterations for H_res (paper 20; TileKernels code 10)
  mhc_res_init: float = 2.0     # mhc: b_res = this * I, H_res near identity at init (the paper gives no value)
  layerscale_init: float = 0.1  # layerscale (and identity='layerscale'): initial lambda (CaiT: 0.1 up to depth 18)
  highway_bias: float = -2.0    # highway (and identity='highway'): initial gate bias, sigmoid(-2) = 0.12 transform
  # Head.
  head_pool: str = 'flatten'    # 'flatten' the T tokens (T*D) or 'mean'-pool them (D)
  head_hidden: tuple = (256,)   # hidden sizes of the head MLP
  first_order: bool = False     # add a logistic-regression path to the logit (Wide & Deep's linear part)
  dtype: Any = jnp.float32      # computation dtype (parameters stay float32)
  table_pad: int = 8

  CHOICES: ClassVar[dict] = dict(BACKBONE_CHOICES, **ABLATION_CHOICES, qkv=('token', 'shared'),
                                 ffn=('token', 'shared'), ffn_act=('gelu', 'swiglu'),
                                 branch_init=('zero', 'default'), out_norm=('rms', 'none'))

  def ffn_spec(self):
    """(FFN class, kwargs) of the per-token FFN: GELU MLP or SwiGLU."""
    cls = layers.SwiGLU if self.ffn_act == 'swiglu' else layers.FeedForward
    return cls, dict(mult=self.ffn_mult, token_specific=self.ffn == 'token')

  def make_tokenizer(self, name='tokenizer'):
    return FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim, self.width,
                            self.tokenizer, self.num_tokens, self.dense_transform, self.table_pad,
                            self.dtype, cross_layers=self.embed_cross, seq_share=self.seq_share, **_naming(name))

  def make_backbone(self, name='backbone'):
    return backbone_lib.Backbone(
        mixer=layers.SelfAttention, mixer_kw=dict(num_heads=self.num_heads,
                                                  token_specific=self.qkv == 'token'),
        ffn=self.ffn_spec()[0], ffn_kw=self.ffn_spec()[1], **backbone_kwargs(self), **_naming(name))

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = self.make_tokenizer()(batch)  # [B, T, D]
    # The backbone runs token-major, [T, B, D] (see layers.py); the head gets [B, T*D] again.
    out, _ = self.make_backbone()(emb.transpose(1, 0, 2), train)
    logits = layers.MLPHead(self.head_hidden, self.dtype, name='head')(
        layers.pool_tokens(out, self.head_pool)).astype(jnp.float32)
    if self.first_order:
      logits = logits + first_order_logit(self, batch)
    return logits, aux

  def check(self):
    if self.width % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} does not divide width={self.width}.')
    self.make_backbone(name=None).check()

  def flops_per_example(self) -> dict:
    tok = self.make_tokenizer(name=None)
    t, d = tok.num_output_tokens(), self.width
    attn = layers.SelfAttention(self.num_heads, self.qkv == 'token', parent=None)
    cls, kw = self.ffn_spec()
    ffn = cls(**kw, parent=None)
    return flops_lib.total({
        'tokenizer': tok.flops(),
        'attention': self.depth * attn.flops(t, t, d),
        'ffn': self.depth * ffn.flops(t, d),
        'connectors': self.make_backbone(name=None).connector_flops([t] * self.depth, d),
        'head': layers.head_flops(t * d if self.head_pool == 'flatten' else d, self.head_hidden),
        **first_order_flops(self),
    })
