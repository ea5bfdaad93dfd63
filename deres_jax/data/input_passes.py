"""Reading the inputs of `preprocess`: chunk streams, the process pool over them, pass 1 and the
time split's pre-pass.

  input_chunks:    (file_spec, path, file_index, first_line, data) of every chunk of the inputs
                   (text via `delimited`, Parquet via `csv_source`); a damaged gzip ends its file.
  ordered:         fn(*item) over the chunks in a process pool a few items ahead, results in order.
  spill_chunks:    pass 1: parse and check every row, assign its split, spill its keys to
                   `<tmp>/spill` and count the training keys (the vocabularies).
  time_thresholds: the pre-pass of split_by='time:<column>': the times at which the cumulative
                   row count first reaches the split fractions.

The rules (splits, buckets, memory) are described in `preprocess` (module docstring).
"""
import collections
import dataclasses
import os
import time

import numpy as np

from deres_jax.data import delimited
from deres_jax.data import sequences
from deres_jax.data.bad_input import BadInput
from deres_jax.data.rows import RowSpec, parse_chunk
from deres_jax.data.splits import SPLITS, row_splits
from deres_jax.data.vocab import KeyCounts


def ordered(pool, fn, items, depth):
  """fn(*item) for each item, in a process pool `depth` items ahead; results in order."""
  if pool is None:
    yield from (fn(*item) for item in items)
    return
  pending = collections.deque()
  for item in items:
    pending.append(pool.submit(fn, *item))
    if len(pending) >= depth:
      yield pending.popleft().result()
  while pending:
    yield pending.popleft().result()


def _spill_one(spec, path, file_index, first_line, data, index, spill, options, count, rule):
  """Pass 1 on one chunk: parse, split, spill; returns (rows per split, bad rows, train key counts)."""
  bad = BadInput(options.strict)
  p = parse_chunk(spec, delimited.Chunk(data, first_line, spec.sep), path, bad)
  split = row_splits(rule, file_index, p)
  arrays = {'split': split, 'label': p.label, 'keys': p.keys, 'dense': p.dense}
  if p.scenario is not None:
    arrays['scenario'] = p.scenario
  if p.seq_keys is not None:
    arrays['seq'], arrays['seqkept'] = p.seq_keys, p.seq_kept
  for name, a in arrays.items():
    np.save(os.path.join(spill, f'{index:06d}.{name}.npy'), a)
  counts = None
  if count:
    train = split == 0
    columns = [p.keys[train, f] for f in range(p.keys.shape[1])]
    if p.seq_keys is not None:  # the kept (not padded) elements of each list field
      columns += sequences.elements(p.seq_keys[train], p.seq_kept[train])
    if p.scenario is not None:
      columns.append(p.scenario[train])
    counts = [np.unique(c, return_counts=True) for c in columns]
  return np.bincount(split, minlength=len(SPLITS) if count else 1), bad, counts


def input_chunks(spec, paths, options, errors, columns=()):
  """(file_spec, path, file_index, first_line, data) of every chunk; a damaged gzip ends its file.

  `columns`: Parquet reads only these (in file order; text is always read whole).
  """
  for file_index, path in enumerate(paths):
    file_spec = spec
    if path.endswith('.parquet'):
      from deres_jax.data import csv_source  # pylint: disable=g-import-not-at-top
      cols = tuple(c for c in spec.columns if c in columns) if columns else spec.columns
      stream = csv_source.parquet_chunks(path, cols, seq_sep=spec.seq_sep)
      # Parquet rows always have every column: min_fields (Criteo's short rows) does not apply.
      file_spec = dataclasses.replace(spec, columns=cols, sep=csv_source.PARQUET_SEP, header=False,
                                      min_fields=0)
    else:
      stream = delimited.read_chunks(path, options.chunk_bytes)
    try:
      for first_line, data in delimited.prefetch(stream):
        yield file_spec, path, file_index, first_line, data
    except delimited.CorruptGzip as e:
      errors.append((path, e))


def spill_chunks(spec, paths, spill, options, bad, counts, log, pool, rule):
  """Pass 1 over all chunks. Returns (number of chunks, rows per split)."""
  errors = []
  items = ((*c, i, spill, options, counts is not None, rule)
           for i, c in enumerate(input_chunks(spec, paths, options, errors)))
  rows, chunks, t0 = 0, 0, time.perf_counter()
  for chunk_rows, chunk_bad, chunk_counts in ordered(pool, _spill_one, items, 4):
    bad.merge(chunk_bad)  # in chunk order: the first lines per kind stay the first
    if counts is not None:
      for c, (u, n) in zip(counts, chunk_counts):
        c.add(u, n)
    rows = rows + chunk_rows
    chunks += 1
    if chunks % 50 == 0:
      log(f'  {rows.sum():,} rows, {rows.sum() / (time.perf_counter() - t0):,.0f} rows/s')
  for path, e in errors:
    bad.add('corrupt_gzip', path, [e.line], e.reason + '; the rows before it are kept')
  return chunks, np.atleast_1d(rows)


def _times_one(spec, path, file_index, first_line, data, strict):
  """Time pre-pass on one chunk: (distinct times, their counts, bad rows, first number / date line)."""
  del file_index
  bad = BadInput(strict)
  p = parse_chunk(spec, delimited.Chunk(data, first_line, spec.sep), path, bad)
  u, c = np.unique(p.time, return_counts=True)
  first = lambda m: (path, int(p.line[np.argmax(m)])) if m.any() else None
  return u, c, bad, first(~p.time_date), first(p.time_date)


def time_thresholds(spec, paths, options, pool, log):
  """Pre-pass of the time split: reads the time column, returns (thresholds, split record).

  Memory: one chunk plus the distinct times with their counts. Rows that pass 1 drops (bad
  label, field count, bad time) are dropped here too, so the fractions are of the kept rows.
  """
  only = RowSpec(name=spec.name, columns=spec.columns, label=spec.label, time=spec.time,
                 sep=spec.sep, header=spec.header, min_fields=spec.min_fields)
  counts, bad, errors = KeyCounts(np.float64), BadInput(options.strict), []
  first_number = first_date = None
  items = ((*c, options.strict) for c in input_chunks(only, paths, options, errors, (spec.label, spec.time)))
  for u, c, chunk_bad, number, date in ordered(pool, _times_one, items, 4):
    counts.add(u, c)
    bad.merge(chunk_bad)
    first_number, first_date = first_number or number, first_date or date
  if first_number and first_date:
    raise ValueError(f'time-split column {spec.time!r} mixes numbers ({"%s:%d" % first_number}) and '
                     f'ISO dates ({"%s:%d" % first_date}): one kind per column')
  times, n = counts.items()
  if not len(times):
    raise ValueError(f'no row has a valid time in column {spec.time!r} of {paths}; {bad.summary()}')
  cum = np.cumsum(n)
  thresholds = []
  for edge in np.cumsum(options.split)[:-1] / np.sum(options.split):
    target = int(round(edge * cum[-1]))  # rows the earlier splits should hold together
    thresholds.append(-np.inf if target == 0 else float(times[np.searchsorted(cum, target)]))
  is_date = first_date is not None

  def show(t):  # JSON-readable: None for "before every row", ISO text for dates
    if not np.isfinite(t):
      return None
    if is_date:
      return str(np.datetime64(int(t), 'us').astype('datetime64[s]' if t % 1e6 == 0 else 'datetime64[us]'))
    return int(t) if t == int(t) else float(t)
  record = {'kind': 'iso_date' if is_date else 'number',
            'thresholds': [show(t) for t in thresholds],
            'time_range': [show(times[0]), show(times[-1])]}
  log(f'time split on {spec.time!r} ({record["kind"]}, {record["time_range"][0]} .. '
      f'{record["time_range"][1]}): train <= {record["thresholds"][0]} < val <= '
      f'{record["thresholds"][1]} < test')
  upto = [int(cum[i - 1]) if i else 0 for i in np.searchsorted(times, thresholds, side='right')]
  sizes = np.diff([0, *upto, int(cum[-1])])  # rows per split, as pass 1 will assign them
  for name, size, fraction in zip(SPLITS, sizes, options.split):
    if fraction > 0 and not size:
      log(f'warning: the {name} split is empty: too many rows share the times around its threshold')
  return thresholds, record
