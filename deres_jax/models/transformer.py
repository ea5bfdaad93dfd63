"""CTR Transformer: feature tokenizer -> L blocks (attention + per-token FFN) -> pooled MLP head.

The residual design is pluggable (`connector`: 'prenorm' | 'attnres' | 'deres', see
`connectors.py`). Each block is RMSNorm pre-norm inside each sublayer:
    attn_out = Attn(RMSNorm(u_attn)),   ffn_out = FFN(RMSNorm(u_ffn)),
where u_* are the connector's inputs (for PreNorm: the running stream h).

With `scan_layers=True` the L blocks are applied with `nn.scan` over stacked parameters
(parameters get a leading 'layers' axis) so compile time does not grow with depth; for
AttnRes/DeRes, applying the model (after init) runs `source_scan.scan_blocks` on the same
parameters, whose gradient does not store the depth-source buffer per block. The default, `scan_layers=False`,
unrolls the blocks: faster steps at moderate depth, compile time growing with depth.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import connectors
from deres_jax.models import layers
from deres_jax.models import source_scan
from deres_jax.models.tokenizer import FeatureTokenizer


class Block(nn.Module):
  """One Transformer block; a scan body mapping (state, layer) -> (state, layer + 1)."""
  width: int
  num_heads: int
  ffn_mult: int
  qkv: str                  # 'token' | 'shared'
  ffn: str                  # 'token' | 'shared'
  layer_unit: str           # 'sublayer' | 'block': what the connector wraps (A1)
  connector: dict           # Connector attributes (kind, block_size, ...)
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, carry, _=None):
    state, layer = carry  # the block index: an int, or an int32 scalar traced under scan
    conn = dict(self.connector)
    value = conn.get('value', 'output')
    value = 'output' if value is None else value
    kw = {k: v for k, v in conn.items() if k != 'value'}
    attn = layers.SelfAttention(self.num_heads, self.qkv == 'token', dtype=self.dtype, name='attn')
    ffn = layers.FeedForward(self.ffn_mult, self.ffn == 'token', dtype=self.dtype, name='ffn')
    norm_attn = layers.RMSNorm(name='attn_norm')
    norm_ffn = layers.RMSNorm(name='ffn_norm')
    drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
    bs = conn['block_size']
    if self.layer_unit == 'sublayer':
      # Two connected units per block (AttnRes §3: one AttnRes before attention, one before MLP).
      j = 2 * layer
      u = connectors.Connector(name='attn_res', **kw)(state, j)
      state = connectors.update_state(state, drop(attn(norm_attn(u))), j, bs, value)
      u = connectors.Connector(name='ffn_res', **kw)(state, j + 1)
      state = connectors.update_state(state, drop(ffn(norm_ffn(u))), j + 1, bs, value)
    else:
      # One connected unit per block; inside it the usual PreNorm residual.
      u = connectors.Connector(name='block_res', **kw)(state, layer)
      a = drop(attn(norm_attn(u)))
      f = drop(ffn(norm_ffn(u + a)))
      state = connectors.update_state(state, a + f, layer, bs, value)
    return (state, layer + 1), None


class CTRTransformer(nn.Module):
  """Tokenizer + backbone + head. Returns (logits [B], aux dict)."""
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  # Tokenizer.
  embed_dim: int = 16           # E: per-field embedding size
  tokenizer: str = 'field'      # 'field' | 'group' (RankMixer)
  num_tokens: int = 8           # T for tokenizer='group'
  dense_transform: str = 'log1p'
  # Backbone.
  depth: int = 2                # L: Transformer blocks
  width: int = 64               # D
  num_heads: int = 4
  ffn_mult: int = 4
  qkv: str = 'token'            # OneTrans: token-specific Q/K/V for non-sequential tokens
  ffn: str = 'token'            # RankMixer/OneTrans per-token FFN
  dropout: float = 0.0
  scan_layers: bool = False     # True: nn.scan over stacked blocks (see config.py)
  # Residual connector (see connectors.py and research/deres.md §7.6).
  connector: str = 'prenorm'
  layer_unit: str = 'sublayer'  # A1
  block_size: int = 4           # A2 (units per AttnRes block)
  value: str = 'output'         # A3
  depth_weights: str = 'auto'   # A6: 'auto' = 'softmax' for attnres, 'silu' for deres
  pointwise_norm: str = 'num_sources'
  key_norm: bool = True
  query: str = 'shared'         # A7
  merge: str = 'add'            # A4
  gate: str = 'vector'          # A5
  gate_init: float = 0.0
  # Head.
  head_pool: str = 'flatten'    # 'flatten' [B, T*D] | 'mean' [B, D]
  head_hidden: tuple = (256,)
  dtype: Any = jnp.float32      # computation dtype (parameters stay float32)
  table_pad: int = 8

  def num_units(self) -> int:
    return self.depth * (2 if self.layer_unit == 'sublayer' else 1)

  def _rebuild_sources(self, train: bool) -> bool:
    """Whether the scanned blocks use `source_scan` (AttnRes/DeRes source buffer, see there).

    Not at init (nn.scan creates the parameters), nor when sowing intermediates (depth
    weights for inspection), nor with active dropout (nn.scan splits its RNG per block).
    """
    return (self.connector != 'prenorm' and not self.is_initializing()
            and not self.is_mutable_collection('intermediates')
            and not (train and self.dropout > 0))

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = FeatureTokenizer(
        self.vocab_sizes, self.num_dense, self.embed_dim, self.width, self.tokenizer,
        self.num_tokens, self.dense_transform, self.table_pad, self.dtype, name='tokenizer')(batch)
    t = emb.shape[1]
    # The backbone runs token-major, [T, B, D] (see layers.py); the head gets [B, T*D] again.
    emb = emb.transpose(1, 0, 2)
    units = self.num_units()
    weights = self.depth_weights
    if weights == 'auto':
      weights = 'softmax' if self.connector == 'attnres' else 'silu'
    conn = dict(kind=self.connector, width=self.width, num_tokens=t, num_units=units,
                block_size=self.block_size, depth_weights=weights,
                pointwise_norm=self.pointwise_norm, key_norm=self.key_norm, query=self.query,
                merge=self.merge, gate=self.gate, gate_init=self.gate_init)
    state = connectors.init_state(self.connector, emb, units, self.block_size, self.value,
                                  stacked=self.scan_layers)
    block_kw = dict(width=self.width, num_heads=self.num_heads, ffn_mult=self.ffn_mult,
                    qkv=self.qkv, ffn=self.ffn, layer_unit=self.layer_unit,
                    connector=dict(conn, value=self.value), dropout=self.dropout,
                    deterministic=not train, dtype=self.dtype)
    if self.scan_layers and self._rebuild_sources(train):
      # Same parameters as nn.scan below (which creates them at init), applied by a scan whose
      # backward pass rebuilds the source buffer instead of saving it per block.
      if 'blocks' not in self.variables.get('params', {}):
        raise ValueError('scan_layers=True expects the stacked parameters of nn.scan under '
                         "'blocks'; these look like an unrolled model's (block_0, block_1, ...). "
                         'The two layouts are not interchangeable: set scan_layers to match.')
      params = nn.unbox(self.variables['params']['blocks'])
      block = Block(**block_kw, parent=None)  # a free module: applied as a pure function
      apply_block = lambda p, st, i: block.apply({'params': p}, (st, i))[0][0]  # noqa: E731
      per_layer = 2 if self.layer_unit == 'sublayer' else 1
      carry = (source_scan.scan_blocks(apply_block, per_layer, self.block_size, params, state),)
    elif self.scan_layers:
      carry = (state, jnp.zeros((), jnp.int32))  # the block index is traced inside the scan
      blocks = nn.scan(Block, variable_axes={'params': 0, 'intermediates': 0},
                       split_rngs={'params': True, 'dropout': True}, length=self.depth,
                       metadata_params={nn.PARTITION_NAME: 'layers'})
      carry, _ = blocks(name='blocks', **block_kw)(carry, None)
    else:
      carry = (state, 0)  # a static block index: connectors use Python lists of sources
      for i in range(self.depth):
        carry, _ = Block(name=f'block_{i}', **block_kw)(carry, None)
    state = carry[0]
    # Output: PreNorm's final stream; AttnRes/DeRes aggregate all blocks with their own query.
    out = connectors.Connector(name='out_res', **conn)(state, units)
    out = layers.RMSNorm(name='out_norm')(out)  # [T, B, D]
    if self.head_pool == 'flatten':
      pooled = out.transpose(1, 0, 2).reshape(out.shape[1], -1)  # [B, T*D]
    else:
      pooled = out.mean(axis=0)  # [B, D]
    logits = layers.MLPHead(self.head_hidden, self.dtype, name='head')(pooled)
    return logits.astype(jnp.float32), aux
