"""Prefix-trie constrained beam search, jit-compiled, with an end token.

The trie of all valid token sequences (each item's semantic ID followed by `eos`) is stored
as CSR arrays: the children of node n are entries child_start[n] .. child_start[n+1]-1 of
child_token / child_node, and node_item[n] > 0 marks the node reached by `eos` (a complete
ID). IDs may have different lengths. At step t every live beam b extends only to children of
its node v_b:
  score(b, a) = score(b) + log p(a | prefix_b),   a in children(v_b)
and the best `beam_size` (beam, child) pairs over all beams survive; a finished beam
(terminal node) carries its score unchanged. log p is the model's own distribution over the
whole vocabulary (not renormalised over the valid children). So every returned ID is a real
item and no beam ever holds an invalid prefix. With beam_size >= the number of valid IDs the
search is exhaustive and returns the exact top-k.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Trie:
  """CSR prefix trie; node 0 is the root."""
  child_start: np.ndarray   # [nodes+1] int32
  child_token: np.ndarray   # [edges] int32
  child_node: np.ndarray    # [edges] int32
  node_item: np.ndarray     # [nodes] int32, item id at the node after eos, else 0
  max_children: int
  max_depth: int            # longest sequence including eos


def build_trie(sequences, items, eos: int) -> Trie:
  """Trie of token sequences (lists of ints, any lengths), each followed by `eos`."""
  children, node_item = [{}], [0]
  for seq, item in zip(sequences, items):
    node = 0
    for tok in list(seq) + [eos]:
      tok = int(tok)
      if tok not in children[node]:
        children[node][tok] = len(children)
        children.append({})
        node_item.append(0)
      node = children[node][tok]
    if node_item[node]:
      raise ValueError(f'items {node_item[node]} and {item} have the same ID {list(seq)}.')
    node_item[node] = int(item)
  start, toks, nodes = [0], [], []
  for c in children:
    for tok in sorted(c):
      toks.append(tok)
      nodes.append(c[tok])
    start.append(len(toks))
  return Trie(np.asarray(start, np.int32), np.asarray(toks, np.int32), np.asarray(nodes, np.int32),
              np.asarray(node_item, np.int32), max(len(c) for c in children),
              1 + max((len(s) for s in sequences), default=0))


def trie_arrays(trie: Trie) -> dict:
  return {k: jnp.asarray(getattr(trie, k)) for k in ('child_start', 'child_token', 'child_node', 'node_item')}


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6))
def beam_search(logprob_fn, arrays: dict, state, batch_size: int, beam_size: int, max_children: int,
                max_depth: int):
  """Constrained beam search.

  Args:
    logprob_fn: (state, prefix [B, K, T] int32, t) -> log-probs [B, K, V] of the next token
      after the first t tokens of prefix (a static Python int t; a hashable function).
    arrays: `trie_arrays(trie)`.
    state: anything the model needs (encoder output), passed to logprob_fn.
    batch_size, beam_size, max_children: B, K and `trie.max_children` (static).
    max_depth: `trie.max_depth`, the number of decoding steps T.
  Returns:
    items [B, K] (0 where fewer than K IDs could be completed), scores [B, K] (sum of log-probs,
    descending), tokens [B, K, T] (the chosen tokens; 0 after the end token).
  """
  B, K, C, T = batch_size, beam_size, max_children, max_depth
  node = jnp.zeros((B, K), jnp.int32)
  score = jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf)[None].repeat(B, 0)  # one live beam
  tokens = jnp.zeros((B, K, T), jnp.int32)
  for t in range(T):
    lp_bkv = logprob_fn(state, tokens, t)
    node, score, new_tok, parent = _advance(arrays, node, score, lp_bkv, C)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(new_tok)
  items = jnp.where(jnp.isfinite(score), arrays['node_item'][node], 0)
  return items, score, tokens


@functools.partial(jax.jit, static_argnums=(0, 1, 4, 5, 6, 7))
def beam_search_cached(init_fn, step_fn, arrays: dict, state, batch_size: int, beam_size: int,
                       max_children: int, max_depth: int):
  """`beam_search` with a decoder cache: each step runs the decoder for the newest token only.

  Args:
    init_fn: (state, beam_size) -> cache, a pytree whose leaves have B*K rows (beam-major
      within each example); after each step every leaf is gathered from the beam's parent
      (per-example copies, such as the cross-attention keys/values, come out unchanged).
    step_fn: (state, cache, tokens [B, K], t) -> (log-probs [B, K, V] of the token after the
      decoder input `tokens` at position t, cache); position 0's input is the start token.
    The other arguments and the results are those of `beam_search`; the beams and scores are the
    same (tested). The decoder state of each surviving beam is gathered from its parent after
    every step; once every beam has ended, the remaining steps skip the decoder.
  """
  B, K, C, T = batch_size, beam_size, max_children, max_depth
  node = jnp.zeros((B, K), jnp.int32)
  score = jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf)[None].repeat(B, 0)
  tokens = jnp.zeros((B, K, T), jnp.int32)
  cache = init_fn(state, K)
  last = jnp.full((B, K), 1, jnp.int32)  # the start token (tiger.BOS)
  for t in range(T):
    done = arrays['node_item'][node] > 0
    lp_bkv, cache = jax.lax.cond(
        done.all(), lambda c: (jnp.zeros((B, K, _vocab(step_fn, state, c, last, t)), jnp.float32), c),
        lambda c: step_fn(state, c, last, t), cache)
    node, score, last, parent = _advance(arrays, node, score, lp_bkv, C)
    tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(last)
    cache = _reorder(cache, parent, B, K)
  items = jnp.where(jnp.isfinite(score), arrays['node_item'][node], 0)
  return items, score, tokens


def _advance(arrays, node, score, lp_bkv, C: int):
  """One step of the constrained search: every beam's trie children scored, the best K kept.

  Returns (node, score, chosen token, parent beam) [B, K] each. A finished beam (its node ends
  an ID) keeps its score as its single candidate and chooses token 0.
  """
  B, K = node.shape
  first, end = arrays['child_start'][node], arrays['child_start'][node + 1]
  idx_bkc = first[..., None] + jnp.arange(C)
  valid = idx_bkc < end[..., None]
  idx_bkc = jnp.minimum(idx_bkc, arrays['child_token'].shape[0] - 1)
  tok_bkc = jnp.where(valid, arrays['child_token'][idx_bkc], 0)
  nxt_bkc = arrays['child_node'][idx_bkc]
  cand = jnp.where(valid, score[..., None] + jnp.take_along_axis(lp_bkv, tok_bkc, axis=2), -jnp.inf)
  done = arrays['node_item'][node] > 0
  stay = jnp.arange(C) == 0
  cand = jnp.where(done[..., None], jnp.where(stay, score[..., None], -jnp.inf), cand)
  tok_bkc = jnp.where(done[..., None], 0, tok_bkc)
  nxt_bkc = jnp.where(done[..., None], node[..., None], nxt_bkc)
  score, flat = jax.lax.top_k(cand.reshape(B, K * C), K)
  take = lambda a: jnp.take_along_axis(a.reshape(B, K * C), flat, axis=1)
  return take(nxt_bkc), score, take(tok_bkc), flat // C


def _vocab(step_fn, state, cache, last, t) -> int:
  """The vocabulary size V of step_fn's output (its shape, without computing it)."""
  return jax.eval_shape(lambda c: step_fn(state, c, last, t)[0], cache).shape[-1]


def _reorder(cache, parent_bk, B: int, K: int):
  """Gathers every per-beam leaf ([B*K, ...]) from the beam's parent."""
  def gather(x):
    if x.ndim == 0 or x.shape[0] != B * K:
      return x
    x = x.reshape((B, K) + x.shape[1:])
    idx = parent_bk.reshape((B, K) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1).reshape((B * K,) + x.shape[2:])
  return jax.tree.map(gather, cache)
