"""Residual connectors: how a sublayer's input is formed from earlier outputs.

Three connectors share one small interface (`init_state`, `Connector.unit_input`,
`update_state`); the backbone calls them around every connected *unit* j = 0..U-1
(a unit is one attention or FFN sublayer, or one whole Transformer block: `layer_unit`).

* 'prenorm' -- the identity skip: u_j = h_j, h_{j+1} = h_j + f_j(norm(u_j)).
* 'attnres' -- Attention Residuals (Kimi Team, arXiv 2603.15031, Eqs. 2-4 and §3.2):
    u_j = sum_s alpha_{s->j} v_s,  alpha = softmax_s( w_j . RMSNorm(v_s) ),
  over the sources v_0 = token embedding, v_1..v_n = completed block sums
  b_n = sum_{i in block n} f_i, and the current block's partial sum. w_j is a zero-initialised
  pseudo-query, keys are RMS-normalised, values are raw. There is no identity stream.
  Full AttnRes is block_size = 1 (every unit is its own block).
* 'deres' -- DeRes (arXiv 2606.07980, reconstructed in research/deres.md §7): an Identity path
  h_j (the PreNorm stream) and a Block AttnRes path a_j merged per hidden dimension by a gate
  g = sigmoid(theta) in (0,1)^D:  'add': u_j = h_j + g*a_j   or   'convex': g*h_j + (1-g)*a_j.
  depth_weights='silu' is Pointwise AttnRes: alpha = SiLU(score) [/ number of sources].
  With w_j = 0, SiLU(0) = 0 so a_j = 0: the 'add' merge starts exactly as PreNorm.

Implementation: slot 0 is the embedding and slot 1 + j // block_size accumulates block
j // block_size; unit j reads the slots s <= j//S + (j%S > 0) (the partial sum only once the
current block has an output). Under `nn.scan` (traced j) the sources live in a fixed-size
buffer src [N_slots, T, B, D], N_slots = 1 + ceil(U / block_size), read through a mask, so
compile time does not grow with depth. Unrolled (static j) they are a Python list, so no
buffer is rewritten at every unit. Each slot's 1/RMS is cached when the slot changes: the
key RMSNorm is computed as (w . v) / RMS(v) without materialising normalised keys.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


KINDS = ('prenorm', 'attnres', 'deres')


def num_slots(num_units: int, block_size: int) -> int:
  """1 (embedding) + number of AttnRes blocks."""
  return 1 + -(-num_units // block_size)


def init_state(kind: str, emb, num_units: int, block_size: int, value: str = 'output',
               stacked: bool = True):
  """Connector state before unit 0, from the token embedding emb [T, B, D] (token-major).

  stacked=True keeps the sources in a fixed-size buffer (needed under nn.scan, where j is
  traced); stacked=False keeps them as a Python list (unrolled layers, static j): no buffer is
  rewritten per unit, so time and memory stay close to PreNorm's.
  """
  state = {}
  if kind in ('prenorm', 'deres') or value == 'hidden':
    state['h'] = emb  # the identity (PreNorm) stream
  if kind in ('attnres', 'deres') and not stacked:
    state['srcs'], state['rinvs'] = [emb], [_inv_rms(emb)]
  elif kind in ('attnres', 'deres'):
    src = jnp.zeros((num_slots(num_units, block_size),) + emb.shape, emb.dtype)
    state['src'] = src.at[0].set(emb)  # source 0 = the token embedding (b_0 = h_1)
    # 1/RMS of each slot, kept up to date as slots change: the key RMSNorm then costs one
    # pass over the changed slot per unit instead of a pass over every slot.
    rinv = jnp.ones(src.shape[:-1], jnp.float32)
    state['rinv'] = rinv.at[0].set(_inv_rms(emb))
  return state


def _inv_rms(x, eps: float = 1e-6):
  x32 = x.astype(jnp.float32)
  return jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1) + eps)


def update_state(state, out, j, block_size: int, value: str = 'output'):
  """Adds unit j's output out [T, B, D] to the stream and to its block's slot."""
  state = dict(state)
  if 'h' in state:
    state['h'] = state['h'] + out
  if 'srcs' in state:  # static j: Python list of sources
    slot = 1 + j // block_size
    srcs, rinvs = list(state['srcs']), list(state['rinvs'])
    if value == 'output':
      new = out if slot == len(srcs) else srcs[slot] + out
    else:
      new = state['h']
    if slot == len(srcs):
      srcs.append(new)
      rinvs.append(_inv_rms(new))
    else:
      srcs[slot], rinvs[slot] = new, _inv_rms(new)
    state['srcs'], state['rinvs'] = srcs, rinvs
  if 'src' in state:
    slot = 1 + j // block_size
    if value == 'output':  # AttnRes: b_n = sum of the block's sublayer outputs
      new = state['src'][slot] + out
    else:                  # 'hidden': the block is represented by the stream h at its end
      new = state['h']
    state['src'] = state['src'].at[slot].set(new)
    state['rinv'] = state['rinv'].at[slot].set(_inv_rms(new))
  return state


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


class Connector(nn.Module):
  """Forms the input of unit j from the connector state; one instance per unit."""
  kind: str = 'prenorm'           # 'prenorm' | 'attnres' | 'deres'
  width: int = 64                 # D
  num_tokens: int = 1             # T (for query='token')
  num_units: int = 1              # U: connected units in the network
  block_size: int = 4             # S: units per AttnRes block; 1 = Full AttnRes  (A2)
  depth_weights: str = 'silu'     # 'softmax' | 'silu' (Pointwise AttnRes) | 'sigmoid'
  pointwise_norm: str = 'num_sources'  # 'num_sources' | 'none' (A6)
  key_norm: bool = True           # RMSNorm on the keys only (AttnRes)            (A6)
  query: str = 'shared'           # 'shared': w_j in R^D; 'token': w_j in R^{T x D}  (A7)
  merge: str = 'add'              # 'add': h + g*a;  'convex': g*h + (1-g)*a      (A4)
  gate: str = 'vector'            # 'vector': g in R^D; 'scalar'; 'none' (g = 1)  (A5)
  gate_init: float = 0.0          # initial gate logit theta; g = sigmoid(theta)  (A5)

  def setup(self):
    if self.kind != 'prenorm':
      shape = (self.width,) if self.query == 'shared' else (self.num_tokens, self.width)
      # AttnRes §3: "all pseudo-query vectors must be initialized to zero".
      self.w = self.param('query', nn.initializers.zeros, shape, jnp.float32)
    if self.kind == 'deres' and self.gate != 'none':
      shape = (self.width,) if self.gate == 'vector' else (1,)
      self.theta = self.param('gate', nn.initializers.constant(self.gate_init), shape, jnp.float32)

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

  def __call__(self, state, j):
    """Input u_j [T, B, D] of unit j (j = num_units gives the backbone output)."""
    if self.kind == 'prenorm':
      return state['h']
    if 'srcs' in state:
      a = self.attend_list(state['srcs'], state['rinvs'], j)
    else:
      a = self.attend(state['src'], state['rinv'], j)
    if self.kind == 'attnres':
      return a
    h = state['h']
    g = 1.0 if self.gate == 'none' else jax.nn.sigmoid(self.theta).astype(h.dtype)
    if self.merge == 'add':
      return h + g * a
    return g * h + (1 - g) * a  # 'convex'
