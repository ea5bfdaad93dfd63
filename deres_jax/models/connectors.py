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

Implementation: every source lives in a fixed-size buffer src [N_slots, B, T, D],
N_slots = 1 + ceil(U / block_size); slot 0 is the embedding and slot 1 + j // block_size
accumulates block j // block_size. Unit j reads the slots s <= j//S + (j%S > 0) (the partial
sum only once the current block has an output), so the same code runs in a Python loop or
under `nn.scan` with a traced j, and compile time does not grow with depth.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models.layers import rms_normalize

KINDS = ('prenorm', 'attnres', 'deres')


def num_slots(num_units: int, block_size: int) -> int:
  """1 (embedding) + number of AttnRes blocks."""
  return 1 + -(-num_units // block_size)


def init_state(kind: str, emb, num_units: int, block_size: int, value: str = 'output'):
  """Connector state before unit 0, from the token embedding emb [B, T, D]."""
  state = {}
  if kind in ('prenorm', 'deres') or value == 'hidden':
    state['h'] = emb  # the identity (PreNorm) stream
  if kind in ('attnres', 'deres'):
    src = jnp.zeros((num_slots(num_units, block_size),) + emb.shape, emb.dtype)
    state['src'] = src.at[0].set(emb)  # source 0 = the token embedding (b_0 = h_1)
  return state


def update_state(state, out, j, block_size: int, value: str = 'output'):
  """Adds unit j's output out [B, T, D] to the stream and to its block's slot."""
  state = dict(state)
  if 'h' in state:
    state['h'] = state['h'] + out
  if 'src' in state:
    slot = 1 + j // block_size
    if value == 'output':  # AttnRes: b_n = sum of the block's sublayer outputs
      state['src'] = state['src'].at[slot].add(out)
    else:                  # 'hidden': the block is represented by the stream h at its end
      state['src'] = state['src'].at[slot].set(state['h'])
  return state


def source_mask(j, n_slots: int, block_size: int):
  """[N_slots] bool: sources visible to unit j (j = num_units: all of them, for the output)."""
  j = jnp.asarray(j, jnp.int32)
  last = j // block_size + (j % block_size > 0).astype(jnp.int32)
  return jnp.arange(n_slots) <= last


def depth_weights(scores, mask, kind: str, pointwise_norm: str):
  """Weights over depth sources from scores [N, B, T] (float32) and mask [N].

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

  def attend(self, src, j):
    """Block AttnRes aggregation over the sources visible to unit j: [B, T, D]."""
    keys = rms_normalize(src) if self.key_norm else src  # values stay raw
    spec = 'nbtd,d->nbt' if self.query == 'shared' else 'nbtd,td->nbt'
    # No 1/sqrt(d) scaling (AttnRes Eq. 2); scores in float32 for a stable softmax.
    scores = jnp.einsum(spec, keys.astype(jnp.float32), self.w)
    alpha = depth_weights(scores, source_mask(j, src.shape[0], self.block_size),
                          self.depth_weights, self.pointwise_norm)
    self.sow('intermediates', 'depth_weights', alpha)
    return jnp.einsum('nbt,nbtd->btd', alpha.astype(src.dtype), src)

  def __call__(self, state, j):
    """Input u_j [B, T, D] of unit j (j = num_units gives the backbone output)."""
    if self.kind == 'prenorm':
      return state['h']
    a = self.attend(state['src'], j)
    if self.kind == 'attnres':
      return a
    h = state['h']
    g = 1.0 if self.gate == 'none' else jax.nn.sigmoid(self.theta).astype(h.dtype)
    if self.merge == 'add':
      return h + g * a
    return g * h + (1 - g) * a  # 'convex'
