"""The shared CTR backbone: L blocks of (token mixer, per-token FFN), each wrapped by a connector.

Every Transformer-family model of the zoo (transformer/DeRes, OneTrans, RankMixer,
TokenMixer-Large, UniMixer, HiFormer) is this backbone with its own token mixer and FFN:

    block l:  u = C_mix(state);  state <- state (+) mixer(Norm(u))      (unit 2l)
              u = C_ffn(state);  state <- state (+) ffn(Norm(u))        (unit 2l + 1)

where C is the residual connector of `connectors.py` (`connectors.CONNECTORS`: prenorm, rezero,
layerscale, highway, hc, mhc, denseformer, attnres, deres), or with `layer_unit='block'` one
connector around the whole block (inside it a PreNorm residual).
Two further residual forms live here because they renormalise the stream itself (their
parameters keep the paths block_l/<unit>_post_norm of existing checkpoints):
  * 'postnorm' (RankMixer as published, research/deres.md §4.2): no pre-norm; after each
    unit h <- LayerNorm(h + f(h)).
  * 'siamese' (UniMixer's SiameseNorm, §4.4): two streams; the normalised one
    h <- RMSNorm(h + f(h)) feeds the units, the raw one y <- y + f(h) accumulates; the
    backbone output is h + RMSNorm(y).

A mixer is a module class called as `mixer(**mixer_kw)(x [T, B, D])` returning [T', B, D]
(T' = T except under OneTrans's pyramid, where `num_queries` is passed); an FFN likewise
maps [T, B, D] -> [T, B, D]. Pyramid (`keep_tokens`, research/deres.md §7.6 A8): block l
keeps only the last keep_tokens[l] tokens; the connector state (stream and every depth
source) is truncated to the same last tokens before the block's output is added.
TokenMixer-Large's inter-block skips (`skip_every` = s): h^(l+s) += h^(l).

Activations are token-major, [T, B, D]. With `scan_layers=True` the blocks run under
`nn.scan` (AttnRes/DeRes via `source_scan.scan_blocks` after init); pyramid, skips and the
connectors of `connectors.UNROLLED_ONLY` (hc, mhc, denseformer) need unrolled blocks.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import connectors
from deres_jax.models import layers
from deres_jax.models import source_scan

# Residual forms: the connectors of connectors.py plus the two renormalising ones above.
KINDS = connectors.KINDS + ('postnorm', 'siamese')


def _truncate(state, keep: int):
  """The connector state restricted to the last `keep` tokens (OneTrans pyramid, A8)."""
  out = {}
  for k, v in state.items():
    if k in ('srcs', 'rinvs', 'xs'):
      out[k] = [x[-keep:] for x in v]
    elif k in ('src', 'rinv', 'H'):
      out[k] = v[:, -keep:]
    else:
      out[k] = v[-keep:]
  return out


class Block(nn.Module):
  """One block; a scan body mapping (state, layer) -> (state, layer + 1)."""
  mixer: Any                # token mixer module class
  mixer_kw: dict            # its attributes
  ffn: Any                  # FFN module class
  ffn_kw: dict
  layer_unit: str           # 'sublayer' | 'block': what the connector wraps (A1)
  connector: dict           # connector fields (kind, block_size, value, ...; connectors.make)
  keep: int = 0             # pyramid: tokens kept by this block (0 = all)
  branch_init: str = 'zero'  # 'zero': sublayer output projections start at zero; 'default'
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  def _unit(self, name, sublayer, state, j, conn):
    """Connector input -> sublayer -> state update, for one connected unit j."""
    kind = conn['kind']
    drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
    if kind in ('postnorm', 'siamese'):
      out = drop(sublayer(state['h']))
      if self.keep:
        state = _truncate(state, self.keep)
      state = dict(state)
      if kind == 'siamese':
        state['y'] = state['y'] + out
        state['h'] = layers.RMSNorm(name=f'{name}_post_norm')(state['h'] + out)
      else:
        state['h'] = nn.LayerNorm(dtype=self.dtype, name=f'{name}_post_norm')(state['h'] + out)
      return state
    c = connectors.make(name=f'{name}_res', **_unit_fields(conn, state, j))
    u = c(state, j)
    out = drop(sublayer(layers.RMSNorm(name=f'{name}_norm')(u)))
    if self.keep and out.shape[0] != state_tokens(state):
      state = _truncate(state, out.shape[0])
    return c.update(state, out, j)

  @nn.compact
  def __call__(self, carry, _=None):
    state, layer = carry  # the block index: an int, or an int32 scalar traced under scan
    conn = self.connector
    mix_kw = dict(self.mixer_kw, num_queries=self.keep) if self.keep else self.mixer_kw
    zero = self.branch_init == 'zero'
    mixer = self.mixer(dtype=self.dtype, name='mixer', **_zero_out(self.mixer, mix_kw, zero))
    ffn = self.ffn(dtype=self.dtype, name='ffn', **_zero_out(self.ffn, self.ffn_kw, zero))
    if self.layer_unit == 'sublayer' or conn['kind'] in ('postnorm', 'siamese'):
      # Two connected units per block (AttnRes §3: one before attention, one before the MLP).
      j = 2 * layer
      state = self._unit('mixer', mixer, state, j, conn)
      state = self._unit('ffn', ffn, state, j + 1, conn)
    else:
      # One connected unit per block; inside it the usual PreNorm residual.
      c = connectors.make(name='block_res', **_unit_fields(conn, state, layer))
      u = c(state, layer)
      drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
      a = drop(mixer(layers.RMSNorm(name='mixer_norm')(u)))
      if a.shape[0] != u.shape[0]:
        state, u = _truncate(state, a.shape[0]), u[-a.shape[0]:]
      f = drop(ffn(layers.RMSNorm(name='ffn_norm')(u + a)))
      state = c.update(state, a + f, layer)
    return (state, layer + 1), None


def _zero_out(cls, kw: dict, zero: bool) -> dict:
  """kw plus zero_out=True for a sublayer class that has that field (branch_init='zero')."""
  has = any(f.name == 'zero_out' for f in dataclasses.fields(cls))
  return dict(kw, zero_out=True) if zero and has else kw


def state_tokens(state) -> int:
  """T of the connector state."""
  if 'h' in state:
    return state['h'].shape[0]
  if 'H' in state:
    return state['H'].shape[1]
  return state['srcs'][0].shape[0] if 'srcs' in state else state['src'].shape[1]


def _unit_fields(conn: dict, state, j) -> dict:
  """Connector fields for unit j: the current token count, and j itself when it is static."""
  return dict(conn, num_tokens=state_tokens(state), index=j if isinstance(j, int) else 0)


class Backbone(nn.Module):
  """Tokens [T, B, D] -> L blocks -> output connector -> RMSNorm: returns (out, per-block h)."""
  mixer: Any                    # token mixer module class
  mixer_kw: dict
  ffn: Any                      # FFN module class
  ffn_kw: dict
  depth: int = 2                # L
  connector: str = 'deres'      # one of KINDS
  layer_unit: str = 'sublayer'  # A1
  block_size: int = 4           # A2
  value: str = 'output'         # A3
  depth_weights: str = 'auto'   # A6
  pointwise_norm: str = 'num_sources'
  key_norm: bool = True
  query: str = 'shared'         # A7
  query_init_scale: float = 0.0  # A6: random pseudo-queries at init (0 = zeros, AttnRes)
  depth_mix: str = 'auto'       # depth attention code path (models/depth_mix.py): 'auto' | 'fused' | 'reference'
  merge: str = 'gated'          # A4
  gate: str = 'vector'          # A5
  gate_init: float = 0.0
  paths: str = 'both'           # DeRes ablation: 'both' | 'identity' | 'attnres'
  identity: str = 'fixed'       # DeRes ablation (A9): 'fixed' | 'rezero' | 'layerscale' | 'highway' | 'matrix'
  hc_rate: int = 4              # hc/mhc: n streams
  hc_dynamic: bool = True       # hc: dynamic (DHC) or static
  mhc_sinkhorn_iters: int = 20  # mhc: Sinkhorn-Knopp iterations
  mhc_res_init: float = 2.0     # mhc: b_res = this * I
  layerscale_init: float = 0.1  # layerscale / identity='layerscale'
  highway_bias: float = -2.0    # highway / identity='highway'
  keep_tokens: tuple = ()       # pyramid: tokens kept after each block; () = all
  skip_every: int = 0           # inter-block skip h^(l+s) += h^(l); 0 = none
  branch_init: str = 'zero'     # 'zero': every sublayer's output projection starts at zero, so each
                                # block starts as the identity and the stream as the token embeddings
                                # (docs/quality.md); 'default': the layers' own (lecun) init
  out_norm: str = 'rms'         # 'rms': RMSNorm on every output token (unit scale per token); 'none':
                                # the tokens keep their scale, so a rare id's small embedding stays small
  dropout: float = 0.0
  scan_layers: bool = False
  dtype: Any = jnp.float32

  def num_units(self) -> int:
    return self.depth * (2 if self.layer_unit == 'sublayer' else 1)

  def _rebuild_sources(self, train: bool) -> bool:
    """Whether the scanned blocks use `source_scan` (AttnRes/DeRes source buffer, see there).

    Not at init (nn.scan creates the parameters), nor when sowing intermediates (depth
    weights for inspection), nor with active dropout (nn.scan splits its RNG per block).
    """
    return (self.uses_sources() and not self.is_initializing()
            and not self.is_mutable_collection('intermediates')
            and not (train and self.dropout > 0))

  def uses_sources(self) -> bool:
    """Whether the connector keeps AttnRes depth sources (attnres, deres with its AttnRes path)."""
    return self.connector == 'attnres' or (self.connector == 'deres' and self.paths != 'identity')

  def has_stream(self) -> bool:
    """Whether the connector state has one identity stream h (needed by inter-block skips)."""
    if self.connector in ('hc', 'mhc'):
      return False
    if self.connector == 'attnres' or (self.connector == 'deres' and self.paths == 'attnres'):
      return self.value == 'hidden'
    return True

  def connector_config(self, num_tokens: int) -> dict:
    weights = self.depth_weights
    if weights == 'auto':
      weights = 'softmax' if self.connector == 'attnres' else 'silu'
    return dict(kind=self.connector, width=0, num_tokens=num_tokens, num_units=self.num_units(),
                block_size=self.block_size, depth_weights=weights,
                pointwise_norm=self.pointwise_norm, key_norm=self.key_norm, query=self.query,
                merge=self.merge, gate=self.gate, gate_init=self.gate_init, value=self.value,
                paths=self.paths, identity=self.identity, rate=self.hc_rate,
                dynamic=self.hc_dynamic, sinkhorn_iters=self.mhc_sinkhorn_iters,
                res_init=self.mhc_res_init, layerscale_init=self.layerscale_init,
                highway_bias=self.highway_bias, query_init_scale=self.query_init_scale,
                depth_mix=self.depth_mix)

  @nn.compact
  def __call__(self, emb, train: bool = False):  # emb [T, B, D]
    t, _, d = emb.shape
    units = self.num_units()
    conn = dict(self.connector_config(t), width=d)
    if self.connector in connectors.CONNECTORS:
      state = connectors.make(parent=None, **conn).init_state(emb, stacked=self.scan_layers)
    else:  # 'postnorm', 'siamese'
      state = {'h': emb}
    if self.connector == 'siamese':
      state['y'] = emb
    block_kw = dict(mixer=self.mixer, mixer_kw=self.mixer_kw, ffn=self.ffn, ffn_kw=self.ffn_kw,
                    layer_unit=self.layer_unit, connector=conn, branch_init=self.branch_init,
                    dropout=self.dropout, deterministic=not train, dtype=self.dtype)
    hidden = []  # the stream after each block (unrolled only), e.g. for auxiliary heads
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
      state = source_scan.scan_blocks(apply_block, per_layer, self.block_size, params, state)
    elif self.scan_layers:
      carry = (state, jnp.zeros((), jnp.int32))  # the block index is traced inside the scan
      blocks = nn.scan(Block, variable_axes={'params': 0, 'intermediates': 0},
                       split_rngs={'params': True, 'dropout': True}, length=self.depth,
                       metadata_params={nn.PARTITION_NAME: 'layers'})
      (state, _), _ = blocks(name='blocks', **block_kw)(carry, None)
    else:
      carry = (state, 0)  # a static block index: connectors use Python lists of sources
      for i in range(self.depth):
        keep = self.keep_tokens[i] if self.keep_tokens else 0
        keep = 0 if keep >= state_tokens(carry[0]) else keep
        if self.skip_every and i % self.skip_every == 0:
          skip_from = carry[0]['h']
        carry, _ = Block(name=f'block_{i}', keep=keep, **block_kw)(carry, None)
        if self.skip_every and (i + 1) % self.skip_every == 0:
          st = dict(carry[0])
          st['h'] = st['h'] + skip_from[-st['h'].shape[0]:]
          carry = (st, carry[1])
        hidden.append(carry[0].get('h'))
      state = carry[0]
    # Output: the final stream (HC/mHC: the streams summed); AttnRes/DeRes aggregate all
    # blocks with their own query, the only connectors with output parameters.
    if self.connector == 'postnorm':
      out = state['h']
    elif self.connector == 'siamese':
      out = state['h'] + layers.RMSNorm(name='out_siamese_norm')(state['y'])
    elif self.uses_sources():
      out = connectors.make(name='out_res', **dict(conn, num_tokens=state_tokens(state),
                                                   index=units)).output(state)
    else:
      out = connectors.make(parent=None, **conn).output(state)
    if self.out_norm == 'none':
      return out, hidden
    return layers.RMSNorm(name='out_norm')(out), hidden  # [T, B, D]

  def check(self):
    """Raises ValueError naming the fields of an impossible combination."""
    units = self.num_units()
    if self.uses_sources() and self.block_size > units:
      raise ValueError(f'block_size={self.block_size} is larger than the {units} connected units '
                       f'(depth={self.depth}, layer_unit={self.layer_unit!r}).')
    if self.keep_tokens and len(self.keep_tokens) != self.depth:
      raise ValueError(f'the pyramid keeps tokens per block: {len(self.keep_tokens)} counts for '
                       f'depth={self.depth}.')
    if (self.keep_tokens or self.skip_every) and self.scan_layers:
      raise ValueError('a token pyramid and inter-block skips need scan_layers=False.')
    if self.scan_layers and self.connector in connectors.UNROLLED_ONLY:
      raise ValueError(f'connector={self.connector!r} needs a static unit index (its state or '
                       'parameters differ per unit): set scan_layers=False.')
    if self.skip_every and not self.has_stream():
      raise ValueError(f'inter-block skips add to the identity stream, which connector='
                       f'{self.connector!r} (paths={self.paths!r}) does not have; use prenorm, deres, '
                       'postnorm or siamese.')
    if self.out_norm not in ('rms', 'none'):
      raise ValueError(f"out_norm must be 'rms' or 'none', got {self.out_norm!r}.")
    if self.branch_init not in ('zero', 'default'):
      raise ValueError(f"branch_init must be 'zero' or 'default', got {self.branch_init!r}.")
    if self.connector == 'mhc' and self.hc_rate < 2:
      raise ValueError(f'connector=mhc mixes n >= 2 streams, got hc_rate={self.hc_rate}.')
    if self.connector in ('postnorm', 'siamese') and self.layer_unit == 'block':
      raise ValueError(f"connector={self.connector!r} wraps every sublayer: set "
                       "layer_unit='sublayer'.")

  def connector_flops(self, tokens: list, width: int) -> int:
    """Connector FLOPs per example, summed over the units and the output (`Conn.flops`)."""
    if self.connector not in connectors.CONNECTORS:
      return 0
    conn = connectors.make(parent=None, **dict(self.connector_config(0), width=width))
    total, per_block = 0, 2 if self.layer_unit == 'sublayer' else 1
    for j in range(self.num_units() + 1):
      t = tokens[min(j // per_block, len(tokens) - 1)]
      total += conn.flops(t, width, j)
    return total
