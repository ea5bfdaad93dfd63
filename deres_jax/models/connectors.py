"""Residual connectors: how a unit's input is formed from earlier outputs, and how its output
is folded back into the connector state.

Every connector is one Flax module class with one interface. The backbone makes one instance
per connected *unit* j = 0..U-1 (a unit is one attention or FFN sublayer, or one whole
Transformer block: `layer_unit`) and one more for the backbone output:

    state = Conn(parent=None, ...).init_state(emb)     # before unit 0; emb [T, B, D]
    u_j   = conn(state, j)                             # the unit's input       [T, B, D]
    state = conn.update(state, f_j(RMSNorm(u_j)), j)   # the same instance: state update
    out   = conn_out.output(state)                     # after unit U-1         [T, B, D]

`make(kind, **fields)` picks the class from `CONNECTORS` (config.model.connector) and passes
it the fields it declares. h is the residual stream, f_j the unit's output:

* 'prenorm'     h_{j+1} = h_j + f_j(Norm(h_j)): the identity skip.
* 'rezero'      h_{j+1} = h_j + alpha_j f_j, alpha_j a scalar initialised to 0 (Bachlechner et
                al. 2020): the network starts as the identity map.
* 'layerscale'  h_{j+1} = h_j + diag(lambda_j) f_j, lambda_j in R^D (CaiT, Touvron et al. 2021).
* 'highway'     h_{j+1} = (1 - g) h_j + g f_j, g = sigmoid(W Norm(h_j) + b) in (0,1)^D
                (Srivastava et al. 2015; AttnRes Table 5).
* 'hc'          Hyper-Connections (arXiv 2409.19606, research/deres.md §3.1): n streams
                H [n, T, B, D]; u = A_m^T H, H <- A_r^T H + B^T f, static matrices initialised
                to Pre-Norm (A_m = e_{j mod n}, A_r = I, B = 1) plus, if dynamic, tanh
                projections of Norm(H) scaled by s = 0.01 (zero-initialised).
* 'mhc'         mHC (arXiv 2512.24880 Eqs. 3, 10, 11, §3.2): H^pre = sigmoid(.), H^post =
                2 sigmoid(.), H^res = Sinkhorn-Knopp(exp(.)) doubly stochastic, each from
                alpha (x~ phi) + b with x~ = RMSNorm(vec H) over the n*D vector.
* 'denseformer' DenseFormer depth-weighted averaging (Pagliardini et al. 2024): after unit j
                the stream is h = sum_{i<=j+1} w_{j,i} X_i over X_0 = emb and the units' outputs
                X_i = h + f (weights initialised one-hot on the newest: Pre-Norm).
* 'attnres'     Attention Residuals (arXiv 2603.15031, Eqs. 2-4 and §3.2):
                u_j = sum_s alpha_{s->j} v_s,  alpha = softmax_s( w_j . RMSNorm(v_s) ),
                over v_0 = token embedding, the completed block sums b_n = sum_{i in n} f_i
                and the current block's partial sum. w_j is a zero-initialised pseudo-query;
                keys are RMS-normalised, values raw. No identity stream. Full AttnRes is
                block_size = 1 (every unit is its own block).
* 'deres'       DeRes (arXiv 2606.07980, reconstructed in research/deres.md §7): the Identity
                path h_j and the Block AttnRes path a_j merged per hidden dimension by a gate
                g = sigmoid(theta) in (0,1)^D (research/deres.md §9: a gated fusion beats an
                additive one):  'gated' (default): u = g*h + (1-g)*a;  'additive': u = h + a
                (no gate);  'add': u = h + g*a (the abstract-era reconstruction).
                depth_weights='silu' is Pointwise AttnRes: alpha = SiLU(score) [/ #sources].
                With w_j = 0, SiLU(0) = 0 so a_j = 0 and every merge starts as Pre-Norm (the
                sublayer sees RMSNorm(u), and u is h or g*h).
                Ablations (§7.6, A4/A5/A9): paths='identity' | 'attnres' keeps one path;
                identity='rezero' | 'layerscale' | 'highway' makes the identity stream's update
                learnable; gate='scalar'; merge='gated' with gate_init ~ +3 (g ~ 0.95).

'postnorm' and 'siamese' renormalise the stream itself and live in backbone.py. The single-stream
connectors (prenorm, rezero, layerscale, highway, MatrixResidual, denseformer) live in
residual_streams.py, hc and mhc in hyper_connections.py; this module re-exports them.

Depth sources (attnres, deres): slot 0 is the embedding and slot 1 + j // block_size
accumulates block j // block_size; unit j reads the slots s <= j//S + (j%S > 0) (the partial
sum only once the current block has an output). Under `nn.scan` (traced j) they live in a
fixed-size buffer src [N_slots, T, B, D], N_slots = 1 + ceil(U / block_size), read through a
mask, so compile time does not grow with depth. Unrolled (static j) they are a Python list,
so no buffer is rewritten at every unit. Each slot's 1/RMS is cached when the slot changes:
the key RMSNorm is computed as (w . v) / RMS(v) without materialising normalised keys.
hc, mhc and denseformer need static j (unrolled blocks, `UNROLLED_ONLY`).
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import depth_mix as depth_mix_lib
from deres_jax.models import flops as flops_lib
# The single-stream connectors (prenorm, rezero, layerscale, highway, matrix, denseformer) and the
# multi-stream ones (hc, mhc) live in their own modules; all are re-exported here, sinkhorn for callers.
from deres_jax.models.hyper_connections import HyperConnections, ManifoldHyperConnections, sinkhorn  # noqa: F401
from deres_jax.models.residual_streams import (  # noqa: F401
    DenseFormer, Highway, LayerScale, MatrixResidual, PreNorm, ReZero)


def num_slots(num_units: int, block_size: int) -> int:
  """1 (embedding) + number of AttnRes blocks."""
  return 1 + -(-num_units // block_size)


def _inv_rms(x, eps: float = 1e-6):
  x32 = x.astype(jnp.float32)
  return jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1) + eps)


# ------------------------------------------------------------------ Depth-attention connectors.


def update_sources(state, out, j, block_size: int, value: str = 'output'):
  """Adds unit j's output out [T, B, D] to its block's depth source (after the h update)."""
  state = dict(state)
  slot = 1 + j // block_size
  if 'srcs' in state:  # static j: Python list of sources
    srcs, rinvs = list(state['srcs']), list(state['rinvs'])
    if value == 'output':  # AttnRes: b_n = sum of the block's sublayer outputs
      new = out if slot == len(srcs) else srcs[slot] + out
    else:                  # 'hidden': the block is represented by the stream h at its end
      new = state['h']
    if slot == len(srcs):
      srcs.append(new)
      rinvs.append(_inv_rms(new))
    else:
      srcs[slot], rinvs[slot] = new, _inv_rms(new)
    state['srcs'], state['rinvs'] = srcs, rinvs
  if 'src' in state:
    new = state['src'][slot] + out if value == 'output' else state['h']
    state['src'] = state['src'].at[slot].set(new)
    state['rinv'] = state['rinv'].at[slot].set(_inv_rms(new))
  return state


def source_state(emb, num_units: int, block_size: int, stacked: bool):
  """The depth sources before unit 0: only the embedding (b_0 = h_1).

  stacked=True keeps them in a fixed-size buffer (needed under nn.scan, where j is traced);
  stacked=False keeps them as a Python list (unrolled layers, static j): no buffer is
  rewritten per unit, so time and memory stay close to PreNorm's.
  """
  if not stacked:
    return {'srcs': [emb], 'rinvs': [_inv_rms(emb)]}
  src = jnp.zeros((num_slots(num_units, block_size),) + emb.shape, emb.dtype)
  # 1/RMS of each slot, kept up to date as slots change: the key RMSNorm then costs one pass
  # over the changed slot per unit instead of a pass over every slot.
  rinv = jnp.ones(src.shape[:-1], jnp.float32)
  return {'src': src.at[0].set(emb), 'rinv': rinv.at[0].set(_inv_rms(emb))}


def source_mask(j, n_slots: int, block_size: int):
  """[N_slots] bool: sources visible to unit j (j = num_units: all of them, for the output)."""
  j = jnp.asarray(j, jnp.int32)
  last = j // block_size + (j % block_size > 0).astype(jnp.int32)
  return jnp.arange(n_slots) <= last


def depth_weights(scores, mask, kind: str, pointwise_norm: str):
  """Weights over depth sources from scores [N, T, B] (float32) and mask [N].

  'softmax': normalised over the visible sources (AttnRes Eq. 2).
  'silu'/'sigmoid': pointwise, unnormalised; SiLU can be negative ("forgetting"). With
  pointwise_norm='num_sources' they are divided by the number of visible sources (HSTU's
  1/N), so the path's scale does not grow with depth.
  """
  m = mask[:, None, None]
  if kind == 'softmax':
    scores = jnp.where(m, scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=0)
  act = {'silu': jax.nn.silu, 'sigmoid': jax.nn.sigmoid}[kind]
  alpha = jnp.where(m, act(scores), 0.0)
  if pointwise_norm == 'num_sources':
    alpha = alpha / jnp.sum(mask).astype(alpha.dtype)
  return alpha


def depth_weights_list(scores, kind: str, pointwise_norm: str):
  """`depth_weights` for a list of n score arrays [T, B], all visible; returns a list."""
  if kind == 'softmax':
    m = jax.lax.stop_gradient(functools.reduce(jnp.maximum, scores))
    e = [jnp.exp(s - m) for s in scores]
    z = sum(e)
    return [x / z for x in e]
  act = {'silu': jax.nn.silu, 'sigmoid': jax.nn.sigmoid}[kind]
  scale = 1.0 / len(scores) if pointwise_norm == 'num_sources' else 1.0
  return [act(s) * scale for s in scores]


class AttnRes(nn.Module):
  """Block AttnRes: u_j = sum_s alpha_{s->j} v_s over the visible depth sources; no stream."""
  width: int = 64               # D
  num_tokens: int = 1           # T (for query='token')
  num_units: int = 1            # U: connected units in the network
  block_size: int = 4           # S: units per AttnRes block; 1 = Full AttnRes  (A2)
  value: str = 'output'         # 'output': b_n = sum of outputs; 'hidden': stream h  (A3)
  depth_weights: str = 'softmax'  # 'softmax' | 'silu' (Pointwise AttnRes) | 'sigmoid'
  pointwise_norm: str = 'num_sources'  # 'num_sources' | 'none' (A6)
  key_norm: bool = True         # RMSNorm on the keys only (AttnRes)            (A6)
  query: str = 'shared'         # 'shared': w_j in R^D; 'token': w_j in R^{T x D}  (A7)
  query_init_scale: float = 0.0  # w_j ~ N(0, (scale / sqrt(D))^2) at init; 0 = zeros  (A6)
  depth_mix: str = 'auto'       # unrolled path: 'auto' (fused VJP of depth_mix.py on GPU/TPU) | 'fused' | 'reference'

  def setup(self):
    shape = (self.width,) if self.query == 'shared' else (self.num_tokens, self.width)
    # AttnRes §3: "all pseudo-query vectors must be initialized to zero". With SiLU weights
    # and no identity stream that makes every unit input exactly 0 (a dead start), hence the
    # option of random queries whose scores w . RMSNorm(v) start with unit variance.
    init = (nn.initializers.normal(self.query_init_scale / self.width ** 0.5)
            if self.query_init_scale else nn.initializers.zeros)
    self.w = self.param('query', init, shape, jnp.float32)

  def init_state(self, emb, stacked: bool = False):
    state = source_state(emb, self.num_units, self.block_size, stacked)
    if self.value == 'hidden':
      state['h'] = emb  # the stream whose value at a block's end represents the block
    return state

  def attend(self, src, rinv, j):
    """Block AttnRes aggregation over the sources visible to unit j: [T, B, D]."""
    spec = 'ntbd,d->ntb' if self.query == 'shared' else 'ntbd,td->ntb'
    # w . RMSNorm(v) = (w . v) / RMS(v): the keys are never materialised; values stay raw.
    # No 1/sqrt(d) scaling (AttnRes Eq. 2); scores in float32 for a stable softmax.
    scores = jnp.einsum(spec, src, self.w.astype(src.dtype),
                        preferred_element_type=jnp.float32)
    if self.key_norm:
      scores = scores * rinv
    alpha = depth_weights(scores, source_mask(j, src.shape[0], self.block_size),
                          self.depth_weights, self.pointwise_norm)
    self.sow('intermediates', 'depth_weights', alpha)
    return jnp.einsum('ntb,ntbd->tbd', alpha.astype(src.dtype), src)

  def attend_list(self, srcs, rinvs, j: int):
    """`attend` for a static j over a list of sources.

    The weights stay a list of [T, B] arrays (`depth_weights_list`): no stack, mask or slice
    ops, whose gradients would cost a pad and an add per source and unit.
    """
    n = min(len(srcs), j // self.block_size + (1 if j % self.block_size else 0) + 1)
    spec = 'tbd,d->tb' if self.query == 'shared' else 'tbd,td->tb'
    w = self.w.astype(srcs[0].dtype)
    scores = [jnp.einsum(spec, v, w, preferred_element_type=jnp.float32)
              * (r if self.key_norm else 1.0) for v, r in zip(srcs[:n], rinvs[:n])]
    alphas = depth_weights_list(scores, self.depth_weights, self.pointwise_norm)
    if self.is_mutable_collection('intermediates'):
      self.sow('intermediates', 'depth_weights', jnp.stack(alphas))
    return sum(a.astype(v.dtype)[..., None] * v for a, v in zip(alphas, srcs[:n]))

  def fused(self, state) -> bool:
    """Whether unit inputs take models/depth_mix.py's fused path: unrolled sources (a list), the
    backend or `depth_mix` asks for it, and no intermediates are being sown (the fused path
    keeps no weights; the reference path, same values, sows them)."""
    return ('srcs' in state and depth_mix_lib.use_fused(self.depth_mix)
            and not self.is_mutable_collection('intermediates'))

  def aggregate(self, state, j, merge: str = 'none', h=None, theta=None):
    """The depth-attention path a_j; with merge 'add'/'convex' (fused path only) the merged u_j."""
    if self.fused(state):
      srcs, rinvs = state['srcs'], state['rinvs']
      n = min(len(srcs), j // self.block_size + (1 if j % self.block_size else 0) + 1)
      return depth_mix_lib.depth_mix_fused(
          srcs[:n], rinvs[:n], self.w, h, theta, weights=self.depth_weights,
          pointwise_norm=self.pointwise_norm, key_norm=self.key_norm, merge=merge)
    if 'srcs' in state:
      return self.attend_list(state['srcs'], state['rinvs'], j)
    return self.attend(state['src'], state['rinv'], j)

  def __call__(self, state, j):
    """Input u_j [T, B, D] of unit j (j = num_units gives the backbone output)."""
    return self.aggregate(state, j)

  def update(self, state, out, j):
    if 'h' in state:
      state = dict(state, h=state['h'] + out)
    return update_sources(state, out, j, self.block_size, self.value)

  def output(self, state):
    return self(state, self.num_units)

  def flops(self, t: int, d: int, j: int) -> int:
    """Scoring (w . v) and mixing, per visible source."""
    visible = 1 + j // self.block_size + (1 if j % self.block_size else 0)
    visible = min(visible, num_slots(self.num_units, self.block_size))
    return visible * 2 * flops_lib.dense(d, 1, t)


# DeRes merges of the two paths (A4); the first is the default.
MERGES = ('gated', 'additive', 'add')


class DeRes(AttnRes):
  """Identity path + Block AttnRes path, merged per dimension by g = sigmoid(theta)."""
  depth_weights: str = 'silu'   # Pointwise AttnRes
  merge: str = 'gated'          # 'gated': g*h + (1-g)*a; 'additive': h + a; 'add': h + g*a  (A4)
  gate: str = 'vector'          # 'vector': g in R^D; 'scalar'; 'none' (g = 1)  (A5)
  gate_init: float = 0.0        # initial gate logit theta; g = sigmoid(theta)  (A5)
  paths: str = 'both'           # ablation: 'both', 'identity' only, 'attnres' only
  identity: str = 'fixed'       # A9: h + f, or 'rezero'|'layerscale'|'highway'|'matrix' (h M + f)
  layerscale_init: float = 0.1  # identity='layerscale': initial lambda
  highway_bias: float = -2.0    # identity='highway': initial gate bias

  def setup(self):
    if self.paths != 'identity':
      super().setup()
    if self.has_gate():
      shape = (self.width,) if self.gate == 'vector' else (1,)
      self.theta = self.param('gate', nn.initializers.constant(self.gate_init), shape, jnp.float32)
    if self.paths != 'attnres' or self.value == 'hidden':
      stream = dict(rezero=ReZero, layerscale=LayerScale, highway=Highway,
                    matrix=MatrixResidual).get(self.identity)
      if stream is not None:  # a learnable residual in place of the identity (A9)
        names = {f.name for f in dataclasses.fields(stream)}
        kw = dict(width=self.width, layerscale_init=self.layerscale_init,
                  highway_bias=self.highway_bias, num_units=self.num_units)
        self.stream = stream(**{k: v for k, v in kw.items() if k in names})

  def has_gate(self) -> bool:
    return self.paths == 'both' and self.gate != 'none' and self.merge != 'additive'

  def _kernel_merge(self) -> str:
    """The merge of depth_mix's kernels: 'convex' g*h + (1-g)*a, or 'add' h + g*a (g = 1 without a gate)."""
    if self.merge not in MERGES:
      raise ValueError(f'merge must be one of {MERGES}, got {self.merge!r}.')
    return 'convex' if self.merge == 'gated' else 'add'

  def init_state(self, emb, stacked: bool = False):
    state = {} if self.paths == 'identity' else source_state(emb, self.num_units,
                                                             self.block_size, stacked)
    if self.paths != 'attnres' or self.value == 'hidden':
      state['h'] = emb  # the identity (Pre-Norm) stream
    return state

  def __call__(self, state, j):
    if self.paths == 'identity':
      return state['h']
    if self.paths == 'both' and self.fused(state):  # scores, weights, mix and gate in one VJP
      theta = self.theta if self.has_gate() else None
      return self.aggregate(state, j, merge=self._kernel_merge(), h=state['h'], theta=theta)
    a = self.aggregate(state, j)
    if self.paths == 'attnres':
      return a
    h = state['h']
    g = jax.nn.sigmoid(self.theta).astype(h.dtype) if self.has_gate() else 1.0
    if self._kernel_merge() == 'add':
      return h + g * a          # 'additive' (g = 1) or 'add'
    return g * h + (1 - g) * a  # 'gated'

  def update(self, state, out, j):
    if 'h' in state:
      if self.identity == 'fixed':
        state = dict(state, h=state['h'] + out)
      else:
        state = self.stream.update(state, out, j)
    if self.paths == 'identity':
      return state
    return update_sources(state, out, j, self.block_size, self.value)

  def flops(self, t: int, d: int, j: int) -> int:
    """Depth attention as AttnRes (the gate and merge are elementwise, not counted)."""
    attn = 0 if self.paths == 'identity' else super().flops(t, d, j)
    highway = (self.identity in ('highway', 'matrix') and j < self.num_units
               and self.paths != 'attnres')
    return attn + (flops_lib.dense(d, d, t) if highway else 0)


# config.model.connector -> connector class.
CONNECTORS = {
    'prenorm': PreNorm,               # identity skip
    'rezero': ReZero,                 # learnable scalar on the update, 0 at init
    'layerscale': LayerScale,         # learnable per-dimension scale on the update
    'highway': Highway,               # input-dependent carry/transform gate
    'hc': HyperConnections,           # n streams, static + dynamic mixing
    'mhc': ManifoldHyperConnections,  # n streams, doubly stochastic mixing (Sinkhorn)
    'denseformer': DenseFormer,       # depth-weighted average of all earlier stream states
    'attnres': AttnRes,               # Block/Full Attention Residuals (softmax over depth)
    'deres': DeRes,                   # identity path + Pointwise Block AttnRes path, gated
}
KINDS = tuple(CONNECTORS)
# Connectors whose parameters or state depend on a static unit index (no nn.scan).
UNROLLED_ONLY = ('hc', 'mhc', 'denseformer')


def make(kind: str, **kw):
  """The connector module `kind` with the fields of `kw` that its class declares."""
  cls = CONNECTORS[kind]
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in kw.items() if k in names})


Connector = make  # the name used by callers that pass kind= explicitly


def init_state(kind: str, emb, num_units: int, block_size: int, value: str = 'output',
               stacked: bool = True):
  """Connector state before unit 0 for the connector `kind` (its default fields otherwise)."""
  conn = make(kind, num_units=num_units, block_size=block_size, value=value, parent=None)
  return conn.init_state(emb, stacked=stacked)


def update_state(state, out, j, block_size: int, value: str = 'output'):
  """Pre-Norm stream update plus depth sources (the attnres/deres update without parameters)."""
  if 'h' in state:
    state = dict(state, h=state['h'] + out)
  return update_sources(state, out, j, block_size, value)
