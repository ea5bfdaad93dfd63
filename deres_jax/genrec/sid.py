"""Semantic IDs: collision resolution, statistics and the SID <-> item table kept with a tokenizer.

TIGER (Rajput et al. 2023, Sec. 3.1): items whose quantiser codes (c_1..c_m) coincide get an
extra last token 0, 1, 2, ..., so (12,24,52,0) and (12,24,52,1) name two items and every item
has a unique ID of length m+1 (the extra token is 0 without collision). The order inside a
colliding group is open in the paper: by training popularity (`counts` given: the most
trained item gets 0, the token the retriever sees most, ties by item id) or by item id.
The table is saved as `sids.npz` (codes [N+1, m+1], row 0 = padding = all -1) beside the
tokenizer's parameters and reused at evaluation and serving.
"""
import json
import os

import numpy as np


def resolve_collisions(codes: np.ndarray, counts=None) -> np.ndarray:
  """Appends the de-duplicating token: codes [n, m] -> [n, m+1], unique rows.

  `counts` [n] (training occurrences of each item): within a group the most frequent item gets
  token 0 (ties by row order); None: row (item id) order.
  """
  codes = np.asarray(codes, np.int32)
  _, inverse = np.unique(codes, axis=0, return_inverse=True)
  inverse = inverse.ravel()
  order = (np.arange(len(codes)) if counts is None else
           np.lexsort((np.arange(len(codes)), -np.asarray(counts))))  # popular first, then id
  extra = np.zeros(len(codes), np.int32)
  seen = {}
  for row in order:  # rank of the item inside its group
    group = inverse[row]
    extra[row] = seen.get(group, 0)
    seen[group] = extra[row] + 1
  return np.concatenate([codes, extra[:, None]], axis=1)


def statistics(codes: np.ndarray, codebook_sizes) -> dict:
  """Codebook usage per level, collision rate before resolution and ID length of codes [n, m]."""
  codes = np.asarray(codes)
  _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
  shared = counts[inverse.ravel()] > 1
  return {
      'usage_per_level': [float(len(np.unique(codes[:, l])) / k) for l, k in enumerate(codebook_sizes)],
      # Fraction of items whose code tuple some other item also has (before the extra token).
      'collision_rate': float(shared.mean()),
      'distinct_ids_before': int(len(counts)),
      'max_items_per_id': int(counts.max()),
      'id_length': codes.shape[1] + 1,
  }


class SidTable:
  """SID tokens per item (row 0 = padding) and the reverse lookup SID -> item."""

  def __init__(self, codes: np.ndarray, level_sizes):
    self.codes = np.asarray(codes, np.int32)          # [N+1, m+1]
    self.level_sizes = tuple(int(k) for k in level_sizes)  # vocabulary size of each position
    if self.codes.shape[1] != len(self.level_sizes):
      raise ValueError(f'{self.codes.shape[1]} ID positions but {len(self.level_sizes)} level sizes.')
    self._item = {tuple(r): i for i, r in enumerate(self.codes) if i > 0}
    if len(self._item) != len(self.codes) - 1:
      raise ValueError('semantic IDs are not unique; resolve collisions first.')

  @classmethod
  def from_codes(cls, codes: np.ndarray, codebook_sizes, counts=None):
    """Resolves collisions of codes [N, m] for items 1..N (`counts`: see resolve_collisions)."""
    full = resolve_collisions(codes, counts)
    sizes = tuple(codebook_sizes) + (int(full[:, -1].max()) + 1,)
    return cls(np.concatenate([np.full((1, full.shape[1]), -1, np.int32), full]), sizes)

  def item(self, sid) -> int:
    """Item id of a semantic ID (0 if no item has it)."""
    return self._item.get(tuple(int(t) for t in sid), 0)

  def save(self, directory: str, stats: dict):
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, 'sids.tmp.npz')
    np.savez(tmp, codes=self.codes, level_sizes=np.asarray(self.level_sizes))
    with open(os.path.join(directory, 'stats.json'), 'w') as f:
      json.dump(stats, f, indent=1)
    os.replace(tmp, os.path.join(directory, 'sids.npz'))  # written last: marks the stage done

  @classmethod
  def load(cls, directory: str):
    with np.load(os.path.join(directory, 'sids.npz')) as z:
      return cls(z['codes'], z['level_sizes'])
