"""Which split (train/val/test) each prepared row lands in: hashed, by file, or by time.

The rules are described in `preprocess` (module docstring); the time thresholds are computed
by its pre-pass (`input_passes.time_thresholds`) and applied here.
"""
import numpy as np

SPLITS = ('train', 'val', 'test')


def assign_split(seed: int, file_index: int, lines, fractions) -> np.ndarray:
  """0/1/2 (train/val/test) per row from a splitmix64 hash of (seed, file, line)."""
  base = (seed * 0x9E3779B97F4A7C15 + (file_index << 40)) % (1 << 64)
  x = np.asarray(lines, np.uint64) + np.uint64(base)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  x = x ^ (x >> np.uint64(31))
  u = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
  edges = np.cumsum(fractions)[:-1] / np.sum(fractions)
  return np.searchsorted(edges, u, side='right').astype(np.int8)


def time_column(split_by: str) -> str:
  """The column of split_by='time:<column>'; '' for the hashed split (split_by='')."""
  if not split_by:
    return ''
  mode, _, column = split_by.partition(':')
  if mode != 'time' or not column:
    raise ValueError(f"split_by={split_by!r}: use '' (the hashed random split) or 'time:<column>'")
  return column


def row_splits(rule: dict, file_index: int, parsed) -> np.ndarray:
  """0/1/2 (train/val/test) per parsed row under a split rule (see `_prepare`)."""
  mode = rule['mode']
  if mode == 'hash':
    return assign_split(rule['seed'], file_index, parsed.line, rule['fractions'])
  if mode == 'files':
    return np.full(len(parsed.line), rule['file_split'][file_index], np.int8)
  if mode == 'time':  # side='left': a time equal to a threshold goes to the earlier split
    return np.searchsorted(np.asarray(rule['thresholds']), parsed.time, side='left').astype(np.int8)
  return np.zeros(len(parsed.line), np.int8)  # 'all': scoring with given vocabularies
