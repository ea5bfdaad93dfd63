"""`Retriever`: histories of item ids -> the top-k real items with scores (generative retrieval).

The same class wraps the exported retriever (`load` of a genrec model directory) and the one
restored in process from a training workdir (`genrec_export.in_process`), so both encode,
pad and batch identically; only the compiled functions differ. Each function maps a padded
batch of model inputs to (items [b, K], scores [b, K]) for one static K:

  TIGER   inputs = encoder tokens [b, 1 + L*m]: the hashed user token, then the semantic-ID
          tokens of the last L history items (left-padded; genrec/tiger.py TokenLayout);
          output = the trie-constrained beam search with K beams (genrec/beam.py), scores =
          sum of the log-probabilities of each ID's tokens and eos, so every item is real;
  COBRA   inputs = TIGER's; output = BeamFusion (genrec/cobra.py) of the K trie-constrained
          beams: (1 - w) log softmax(beam log-probs) + w psi cos(beam's dense vector, item
          vector), each item's best over the beams, over the beams' own items or every item
          (the run's `cobra.candidates`, in info['cobra']), so every item is real;
  SASRec  inputs = the last L item ids [b, L], left-padded; output = the top K of the full
          catalogue's scores <H_L, M_i> (item 0, the padding, excluded).

A history is cleaned before encoding: ids that are not items of the catalogue (not an
integer in 1..N) are dropped and counted (`unknown`), and only the most recent L items are
kept (`truncated` counts the dropped older ones), as at training (data.py caps histories at
their last `max_len` items). Batches are padded to a power of two (8 .. batch_size), so each
padded size compiles once. `recommend(k)` runs the smallest exported K >= k and keeps its k
best. Nothing of the training code is imported here.
"""
import numbers
from typing import NamedTuple

import numpy as np


class RequestError(ValueError):
  """A request that does not fit the model (one sentence); the service answers 422."""


class Recommendation(NamedTuple):
  """The top-k of one history."""
  items: np.ndarray    # int64 [<= k], real item ids, best first
  scores: np.ndarray   # float32 [<= k], descending (TIGER: log-probability; COBRA: BeamFusion; SASRec: dot)
  unknown: int         # history ids dropped as not in the catalogue
  truncated: int       # oldest history items dropped beyond max_len


class Encoded(NamedTuple):
  """Histories checked and encoded for the model (what the service queues)."""
  inputs: np.ndarray   # int32 [n, S] model inputs
  beams: np.ndarray    # int64 [n] the exported K each row runs with
  ks: np.ndarray       # int64 [n] items asked for
  unknown: list        # per row, the dropped ids that are not catalogue items
  truncated: list      # per row, the oldest items dropped beyond max_len


class Retriever:
  """Recommends items for histories; `info` is the manifest (system, catalogue size, K values)."""

  def __init__(self, fns: dict, info: dict, item_tokens: np.ndarray | None = None, batch_size: int = 256):
    """
    Args:
      fns: {K: inputs [b, S] int32 -> (items [b, K], scores [b, K])}, one per exported beam size.
      info: 'system' ('tiger' | 'cobra' | 'sasrec'), 'num_items' N, 'max_len' L, and for TIGER and COBRA
        'first_user', 'num_user_tokens' and 'user_token' (the user token layout: 'adjacent', right
        before the first history item as `tiger.TokenLayout` builds it; 'first', exports before it)
        and 'compact_ids' (variable-length IDs back to back; absent in earlier exports: False).
      item_tokens: TIGER's (COBRA's) token table [N+1, m] (row 0 = padding); None for SASRec.
      batch_size: the most histories per call (larger inputs are split).
    """
    self.fns = {int(k): f for k, f in fns.items()}
    self.info, self.item_tokens, self.batch_size = dict(info), item_tokens, int(batch_size)
    self.system, self.num_items, self.max_len = info['system'], int(info['num_items']), int(info['max_len'])
    self.max_k = max(self.fns)

  # ------------------------------------------------------------------ Input checks and encoding.
  def clean(self, history) -> tuple:
    """(kept ids int64 [<= L], the dropped unknown ids, truncated count) of one history."""
    if not isinstance(history, (list, tuple, np.ndarray)):
      raise RequestError(f'a history must be a list of item ids, got {type(history).__name__}')
    ids, unknown = [], []
    for v in history:
      if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if not (isinstance(v, float) and v.is_integer()):
          raise RequestError(f'item ids must be integers, got {v!r}')
      v = int(v)
      (ids if 1 <= v <= self.num_items else unknown).append(v)   # any size: checked before numpy
    known = np.asarray(ids, np.int64)
    kept = known[-self.max_len:] if self.max_len else known[:0]
    return kept, unknown, len(known) - len(kept)

  def inputs(self, kept: list, users: np.ndarray) -> np.ndarray:
    """Model inputs int32 [n, S] of cleaned histories (left-padded, as at training)."""
    hist = np.zeros((len(kept), self.max_len), np.int64)
    for r, h in enumerate(kept):
      if len(h):
        hist[r, self.max_len - len(h):] = h
    if self.system == 'sasrec':
      return hist.astype(np.int32)
    user_tok = self.info['first_user'] + np.asarray(users, np.int64) % self.info['num_user_tokens']
    out = np.concatenate([np.zeros((len(kept), 1), np.int64), self.item_tokens[hist].reshape(len(hist), -1)], 1)
    slot = np.zeros(len(kept), np.int64)   # 'first': position 0, as exported before 'user_token'
    if self.info.get('user_token', 'first') == 'adjacent':  # right before the first history item
      slot = (self.max_len - (hist > 0).sum(1)) * self.item_tokens.shape[1]
    out[np.arange(len(kept)), slot] = user_tok
    if self.info.get('compact_ids', False):   # variable-length IDs back to back (tiger.compact_left)
      out = np.take_along_axis(out, np.argsort(out != 0, axis=1, kind='stable'), axis=1)
    return out.astype(np.int32)

  def encode(self, histories, ks, users=None) -> Encoded:
    """Checks and encodes histories with their k (an int for all, or one per history)."""
    if not isinstance(histories, (list, tuple)):
      raise RequestError(f'histories must be a list of lists of item ids, got {type(histories).__name__}')
    n = len(histories)
    ks = [ks] * n if not isinstance(ks, (list, tuple, np.ndarray)) else list(ks)
    beams = np.asarray([self.beam_for(k) for k in ks], np.int64).reshape(n)
    if users is not None and (len(users) != n or any(isinstance(u, bool) or not isinstance(u, numbers.Integral)
                                                      or abs(int(u)) >= 2 ** 63 for u in users)):
      raise RequestError(f'users must be {n} integers (64-bit), one per history')
    users = np.zeros(n, np.int64) if users is None else np.asarray([int(u) for u in users], np.int64)
    cleaned = [self.clean(h) for h in histories]
    inputs = self.inputs([c[0] for c in cleaned], users) if n else np.zeros((0, 0), np.int32)
    return Encoded(inputs, beams, np.asarray(ks, np.int64).reshape(n), [c[1] for c in cleaned],
                   [c[2] for c in cleaned])

  # ------------------------------------------------------------------ The model calls.
  def beam_for(self, k) -> int:
    """The smallest exported K >= k (raises RequestError beyond the largest)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
      raise RequestError(f'k must be a positive integer, got {k!r}')
    fit = [b for b in sorted(self.fns) if b >= k]
    if not fit:
      raise RequestError(f'k={k} is more than this model was exported for (at most {self.max_k}; '
                         'export with a larger --beam_sizes)')
    return fit[0]

  def run(self, inputs: np.ndarray, beam: int) -> tuple:
    """(items int64 [n, beam], scores float32 [n, beam]) of model inputs, in padded batches."""
    n = len(inputs)
    items, scores = np.zeros((n, beam), np.int64), np.zeros((n, beam), np.float32)
    for start in range(0, n, self.batch_size):
      x = inputs[start:start + self.batch_size]
      m = len(x)
      size = min(self.batch_size, max(8, 1 << (m - 1).bit_length()))
      batch = np.zeros((size, inputs.shape[1]), np.int32)  # padding rows: empty histories
      batch[:m] = x
      i, s = self.fns[beam](batch)
      items[start:start + m], scores[start:start + m] = np.asarray(i)[:m], np.asarray(s)[:m]
    return items, scores

  def run_mixed(self, inputs: np.ndarray, beams: np.ndarray) -> tuple:
    """(items [n, max K], scores [n, max K]) of rows with their own beam sizes (one call per size)."""
    width = int(beams.max()) if len(beams) else 1
    items, scores = np.zeros((len(beams), width), np.int64), np.full((len(beams), width), -np.inf, np.float32)
    for b in np.unique(beams):
      rows = np.flatnonzero(beams == b)
      items[rows, :b], scores[rows, :b] = self.run(inputs[rows], int(b))
    return items, scores

  def decode(self, enc: Encoded, items: np.ndarray, scores: np.ndarray) -> list:
    """One `Recommendation` per history of the model outputs (real items only, the k best)."""
    out = []
    for r, k in enumerate(enc.ks.tolist()):
      i, s = items[r], scores[r]
      real = (i > 0) & np.isfinite(s)   # a beam that could not complete an ID holds item 0
      out.append(Recommendation(i[real][:k], s[real][:k], len(enc.unknown[r]), int(enc.truncated[r])))
    return out

  def recommend(self, histories, k=10, users=None) -> list:
    """The top-k real items of each history.

    Args:
      histories: a list of histories, each a list of item ids (oldest first).
      k: items per history (at most the largest exported K); an int, or one per history.
      users: TIGER and COBRA only: user ids [n] (hashed to the user tokens as at training); None = user 0.
    Returns:
      One `Recommendation` per history (fewer than k items only where fewer could be completed).
    Raises:
      RequestError: a history that is not a list of integers, or a bad k.
    """
    enc = self.encode(histories, k, users)
    return self.decode(enc, *self.run_mixed(enc.inputs, enc.beams))
