"""The data schema every dataset, model and loader in deres_jax agrees on.

A prepared split is a dict of equal-length numpy columns:
  'label':    float32 [N]            click (0/1)
  'dense':    float32 [N, F_dense]   raw numeric values, NaN = missing (omitted if F_dense = 0)
  'cat':      int32   [N, F_cat]     per-field ids in [0, vocab_sizes[f]); id 0 = OOV / missing
  'seq':      int32   [N, F_seq, L]  optional: behaviour sequences (lists of ids), one row of L
                                     per sequence field, oldest first and LEFT-padded: the most
                                     recent item sits at position L-1, padding is id -1
                                     (mask = seq >= 0); id 0 = OOV, as for 'cat'
  'scenario': int32   [N]            optional (multi-scenario models)
  'prob':     float32 [N]            optional: the true click probability (synthetic data only)
"""
import dataclasses

import numpy as np

REQUIRED = ('label',)


@dataclasses.dataclass(frozen=True)
class Schema:
  """Field names and vocabulary sizes of a prepared dataset."""
  dense_names: tuple = ()   # numeric fields, in column order of 'dense'
  cat_names: tuple = ()     # categorical fields, in column order of 'cat'
  vocab_sizes: tuple = ()   # rows per categorical field, the OOV row 0 included
  num_scenarios: int = 0    # > 0 if the data has a 'scenario' column
  seq_names: tuple = ()     # sequence fields, in order of axis 1 of 'seq'
  seq_vocab_sizes: tuple = ()  # rows per sequence field (a shared field: the scalar field's size)
  seq_shared: tuple = ()    # per sequence field: the categorical field whose ids and table it shares, or ''
  seq_len: int = 0          # L: the cap of every sequence (the most recent L items are kept)

  def seq_share_index(self) -> tuple:
    """Per sequence field: the index in cat_names of the field it shares, or -1."""
    return tuple(self.cat_names.index(s) if s else -1 for s in self.seq_shared)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> 'Schema':
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def check_split(schema: Schema, split: dict, name: str = 'split') -> int:
  """Validates a split's columns against the schema; returns its number of rows."""
  if 'label' not in split:
    raise ValueError(f"{name}: missing the 'label' column")
  n = len(split['label'])
  for col, width in (('dense', len(schema.dense_names)), ('cat', len(schema.cat_names))):
    if width == 0:
      continue
    if col not in split:
      raise ValueError(f'{name}: the schema has {width} {col} fields but the split has no {col!r} column')
    a = split[col]
    if a.ndim != 2 or a.shape != (n, width):
      raise ValueError(f'{name}: column {col!r} has shape {a.shape}, expected ({n}, {width})')
  if len(schema.cat_names):
    # Up to 1M evenly spaced rows: a full scan of a memory-mapped 45M x 39 column would read
    # gigabytes at every load (prepared data is validated when it is written, and the model
    # maps any out-of-range id to the OOV row anyway).
    cat = split['cat'][::max(1, n // 1_000_000)]
    bad = (cat < 0) | (cat >= np.asarray(schema.vocab_sizes))
    if bad.any():
      f = int(np.nonzero(bad.any(0))[0][0])
      raise ValueError(f'{name}: categorical field {schema.cat_names[f]!r} has ids outside '
                       f'[0, {schema.vocab_sizes[f]})')
  if schema.seq_names:
    want = (n, len(schema.seq_names), schema.seq_len)
    if 'seq' not in split:
      raise ValueError(f"{name}: the schema has sequence fields {list(schema.seq_names)} but the "
                       "split has no 'seq' column")
    if split['seq'].shape != want:
      raise ValueError(f"{name}: column 'seq' has shape {split['seq'].shape}, expected {want}")
    seq = split['seq'][::max(1, n // 100_000)]
    bad = (seq < -1) | (seq >= np.asarray(schema.seq_vocab_sizes)[:, None])
    if bad.any():
      f = int(np.nonzero(bad.any((0, 2)))[0][0])
      raise ValueError(f'{name}: sequence field {schema.seq_names[f]!r} has ids outside '
                       f'[-1, {schema.seq_vocab_sizes[f]}) (-1 = padding)')
  return n
