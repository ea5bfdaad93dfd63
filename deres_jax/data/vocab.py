"""Vocabularies of prepared data: streaming key counts, key -> id encoding, saved vocab.npz.

Ids: 1..V for the keys seen >= min_count times in train (most frequent first), 0 = OOV.
"""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class KeyCounts:
  """Streaming (key -> count) of one field; merges geometrically so each key is re-sorted O(log) times."""

  def __init__(self, dtype=np.int64):
    self.keys, self.counts = np.zeros(0, dtype), np.zeros(0, np.int64)
    self._pending, self._pending_size = [], 0

  def add(self, u, c):
    """Adds the counts `c` of the distinct keys `u` (np.unique(keys, return_counts=True))."""
    self._pending.append((u, c))
    self._pending_size += len(u)
    if self._pending_size > max(1 << 20, len(self.keys)):
      self._merge()

  def _merge(self):
    if not self._pending:
      return
    k = np.concatenate([self.keys] + [u for u, _ in self._pending])
    c = np.concatenate([self.counts] + [c for _, c in self._pending])
    order = np.argsort(k, kind='stable')
    k, c = k[order], c[order]
    first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    self.keys, self.counts = k[first], np.add.reduceat(c, first) if len(k) else c
    self._pending, self._pending_size = [], 0

  def items(self):
    """(keys, counts) in key order."""
    self._merge()
    return self.keys, self.counts

  def vocabulary(self, min_count: int):
    """(keys, counts) with count >= min_count, most frequent first (ties: by key): ids 1..V."""
    self._merge()
    kept = self.counts >= min_count
    k, c = self.keys[kept], self.counts[kept]
    order = np.lexsort((k, -c))
    return k[order], c[order]


def encode(keys, vocab_keys):
  """int64 keys -> int32 ids: 1 + position in vocab_keys, or 0 (OOV). Arrow's hash lookup."""
  pos = pc.index_in(keys, value_set=pa.array(vocab_keys, pa.int64()))
  return pc.fill_null(pos, -1).to_numpy().astype(np.int32) + 1


_VOCAB = {}


def vocab_cached(path):
  """The id-ordered keys per field (and of the scenario) from vocab.npz, loaded once per process."""
  if path not in _VOCAB:
    z = np.load(path)
    with open(os.path.join(os.path.dirname(path), 'schema.json')) as f:
      schema = json.load(f)['schema']
    _VOCAB[path] = {'fields': [z[f'{f}/keys'] for f in schema['cat_names']],
                    'seq': [z[f'{f}/keys'] for f in schema.get('seq_names', ())],
                    'scenario': z['__scenario__/keys'] if '__scenario__/keys' in z.files else None}
  return _VOCAB[path]


def load_vocab(prepared_dir: str, sequence: bool = False):
  """(vocab {field: (keys, counts)}, scenario (keys, counts) or None) of a prepared dataset.

  With `sequence=True`: only {sequence field: (keys, counts)} (a shared field: the scalar's).
  """
  with open(os.path.join(prepared_dir, 'schema.json')) as f:
    meta = json.load(f)
  z = np.load(os.path.join(prepared_dir, 'vocab.npz'))
  if sequence:
    return {f: (z[f'{f}/keys'], z[f'{f}/counts']) for f in meta['schema'].get('seq_names', ())}
  vocab = {f: (z[f'{f}/keys'], z[f'{f}/counts']) for f in meta['schema']['cat_names']}
  scen = ((z['__scenario__/keys'], z['__scenario__/counts'])
          if '__scenario__/keys' in z.files else None)
  return vocab, scen
