"""BARS-style preparation of delimited CTR logs into columnar numpy splits, streaming.

One code path for Criteo, Avazu and your own CSV/TSV (Parquet is converted to the same
parsed chunks by `csv_source`):

  pass 1: read the text in chunks (`delimited`), parse and check every row, bucket integers,
          turn every categorical value into an exact int64 key, assign each row to
          train/val/test, count the keys of the training rows, and spill the chunk's keys to
          a temporary file;
  vocab:  per field, keys seen >= min_count times in train get ids 1..V (most frequent
          first); everything else, unseen values included, is id 0 (OOV);
  pass 2: encode the spilled keys to int32 ids, straight into the final .npy columns.

The reading passes (chunks, pass 1, the time split's pre-pass) live in `input_passes`.

Memory holds one chunk plus the key counts (the vocabularies), whatever the file size. The
output is written to `<out>.tmp-<pid>` and renamed to `<out>` only after its COMPLETE
marker is written, so a failed or interrupted run never leaves a complete-looking dataset.

Conventions (research/ecosystem.md §1.1, FuxiCTR `criteo.py::convert_to_bucket`):
  - Criteo integers: v > 2 -> floor(ln(v)^2); v <= 2 (0, 1, 2, -1, ...) stay their own
    category; missing is a category of its own (FuxiCTR fills it with 0 instead: we keep the
    two apart, as the issue asks).
  - Split: each row falls in train/val/test with probabilities `split` (8:1:1) by a hash of
    (seed, file, line). It is deterministic and independent of chunking, but the split sizes
    are 8:1:1 only up to sampling noise, and it is NOT the sklearn StratifiedKFold split of
    Criteo_x4 (that one is reproducible only with sklearn 0.19.1).

Two other splits (the mode, column, thresholds and files are recorded in schema.json 'split'):
  - by file: `paths={'train': [...], 'val': [...], 'test': [...]}` (the BARS x4 layout
    train.csv/valid.csv/test.csv): every row of a file lands in that file's split.
  - by time: `Options.split_by='time:<column>'`. A pre-pass reads only that column (and the
    label, so that it sees the rows pass 1 keeps) and counts each distinct time; the
    thresholds are the times at which the cumulative count first reaches the `split`
    fractions. Rows with time <= t1 are train, <= t2 val, the rest test: a timestamp equal to
    a threshold goes to the earlier split, so ties make train (then val) slightly larger.
Whatever the split, the vocabularies count the training rows only.
"""
import concurrent.futures
import ctypes
import dataclasses
import glob
import json
import multiprocessing
import os
import shutil
import time

import numpy as np

from deres_jax.data import sequences
from deres_jax.data.bad_input import BadInput
from deres_jax.data.input_passes import ordered, spill_chunks, time_thresholds
from deres_jax.data.rows import RowSpec
from deres_jax.data.schema import Schema
from deres_jax.data.splits import SPLITS, assign_split, row_splits, time_column  # noqa: F401
from deres_jax.data.vocab import KeyCounts, encode, load_vocab, vocab_cached  # noqa: F401

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Options:
  """How to prepare (mirrors config.data)."""
  min_count: int = 10                 # train occurrences for a category to get its own id
  split: tuple = (0.8, 0.1, 0.1)      # train/val/test fractions (hashed or time split)
  split_by: str = ''                  # '' = hashed random split; 'time:<column>' = earliest rows train
  seed: int = 2018                    # split seed
  strict: bool = False                # stop at the first bad row
  chunk_bytes: int = 8 << 20          # text read per chunk (its arrays stay < 32 MiB)
  processes: int = 0                  # worker processes; 0 = one per CPU core for inputs > 64 MB
  threads: int = 2                    # threads over fields inside a process


def prepare(spec: RowSpec, paths, out_dir: str, options: Options = Options(),
            overwrite: bool = False, log=print, vocab_from: str = '') -> dict:
  """Prepares delimited files into `out_dir`; returns the summary written to COMPLETE.

  Args:
    spec: the columns and what each becomes.
    paths: input files (plain or .gz, or .parquet), read in order and split by
      `options.split_by`; or {'train': files, 'val': files, 'test': files} to split by file
      (a split may be left out: it is then empty).
    out_dir: output directory; written via `<out_dir>.tmp-<pid>` and an atomic rename.
    options: min_count, split fractions and mode, seed, strict, chunk size, parallelism.
    overwrite: replace an existing prepared `out_dir`.
    log: progress printer.
    vocab_from: a prepared directory whose vocabularies to reuse (scoring new files): every
      row then goes to a single split 'all', encoded with those ids.
  Returns:
    The summary dict (rows per split, bad-row counts, seconds, rows per second).
  """
  from deres_jax.data import csv_source  # pylint: disable=g-import-not-at-top
  spec.validate()
  as_list = lambda x: [x] if isinstance(x, str) else list(x)
  by_file = isinstance(paths, dict)
  if by_file:
    if set(paths) - set(SPLITS):
      raise ValueError(f'split files: unknown splits {sorted(set(paths) - set(SPLITS))}; use {SPLITS}')
    labelled = [(s, p) for s in SPLITS for p in as_list(paths.get(s, ()))]
    if not as_list(paths.get('train', ())):
      raise ValueError('split files: no training files (the vocabularies are fitted on them)')
  else:
    labelled = [('input', p) for p in as_list(paths)]
  column = time_column(options.split_by)
  if (by_file or column) and vocab_from:
    raise ValueError('scoring (vocab_from) puts every row in split "all": give plain files, no split')
  if by_file and column:
    raise ValueError(f'split by files or by time ({options.split_by!r}), not both')
  if column:  # raises naming the column and the available ones
    spec = dataclasses.replace(spec, time=column).validate()
  missing = [f'{s} {p}' if by_file else p for s, p in labelled if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f'input files do not exist: {", ".join(missing)}')
  paths = [p for _, p in labelled]
  if not paths:
    raise ValueError('no input files')
  csv_source.check_same_columns(labelled, spec)  # before any work: one message for all files
  if by_file:
    rule = {'mode': 'files', 'file_split': [SPLITS.index(s) for s, _ in labelled],
            'files': {s: [os.path.abspath(p) for x, p in labelled if x == s] for s in SPLITS}}
  elif vocab_from:
    rule = {'mode': 'all', 'files': [os.path.abspath(p) for p in paths]}
  elif column:
    rule = {'mode': 'time', 'column': column, 'fractions': list(options.split),
            'files': [os.path.abspath(p) for p in paths]}
  else:
    rule = {'mode': 'hash', 'seed': options.seed, 'fractions': list(options.split),
            'files': [os.path.abspath(p) for p in paths]}
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f'{out_dir} already exists; pass overwrite=True (--overwrite) to replace it')
  tmp = f'{out_dir}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.join(tmp, 'spill'))
  processes = options.processes or (os.cpu_count() or 1)
  if sum(os.path.getsize(p) for p in paths) < (64 << 20) and not options.processes:
    processes = 1  # small inputs: starting workers costs more than it saves
  pool = None
  if processes > 1:  # spawn, not fork: the caller may hold JAX threads
    pool = concurrent.futures.ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context('spawn'), initializer=_keep_freed_memory)
  _keep_freed_memory()
  try:
    summary = _prepare(spec, paths, tmp, options, log, vocab_from, pool, rule)
    shutil.rmtree(os.path.join(tmp, 'spill'))
    with open(os.path.join(tmp, 'COMPLETE'), 'w') as f:
      json.dump(summary, f, indent=2)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  finally:
    if pool is not None:
      pool.shutdown(cancel_futures=True)
  return summary


def _encode_one(index, spill, out_dir, offsets, vocab_path, threads):
  """Pass 2 on one chunk: spilled keys -> ids, written at this chunk's rows of each split."""
  vocab = vocab_cached(vocab_path)
  load = lambda name: np.load(os.path.join(spill, f'{index:06d}.{name}.npy'))
  split, keys = load('split'), load('keys')
  ids = np.empty(keys.shape, np.int32)

  def enc(j):
    ids[:, j] = encode(keys[:, j], vocab['fields'][j])
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # Arrow releases the GIL
    list(pool.map(enc, range(keys.shape[1])))
  cols = {'label': load('label'), 'cat': ids}
  if os.path.exists(os.path.join(spill, f'{index:06d}.seq.npy')):  # lists: ids, padding -1
    cols['seq'] = sequences.encode_lists(load('seq'), load('seqkept'), vocab['seq'])
  if os.path.exists(os.path.join(spill, f'{index:06d}.scenario.npy')):
    cols['scenario'] = encode(load('scenario'), vocab['scenario'])
  dense = load('dense')
  if dense.shape[1]:
    cols['dense'] = dense
  for i, (name, start) in enumerate(offsets):
    sel = split == i
    for col, a in cols.items():
      out = np.load(os.path.join(out_dir, name, f'{col}.npy'), mmap_mode='r+')
      out[start:start + int(sel.sum())] = a[sel]
      del out  # flushes
  for path in glob.glob(os.path.join(spill, f'{index:06d}.*.npy')):
    os.remove(path)


def _prepare(spec, paths, tmp, options, log, vocab_from, pool, rule):
  t0 = time.perf_counter()
  pass1_rule = {k: v for k, v in rule.items() if k in ('mode', 'seed', 'fractions', 'file_split')}
  if rule['mode'] == 'time':  # thresholds before the vocabulary counting of pass 1
    pass1_rule['thresholds'], record = time_thresholds(spec, paths, options, pool, log)
    rule.update(record)  # JSON-readable thresholds (ISO text for dates)
  bad = BadInput(options.strict)
  fields = spec.cat_names
  spill = os.path.join(tmp, 'spill')
  seq_fields = spec.sequence
  counts = (None if vocab_from else  # categorical fields, sequence fields, scenario
            [KeyCounts() for _ in fields] + [KeyCounts() for _ in seq_fields] + [KeyCounts()])
  chunks, rows = spill_chunks(spec, paths, spill, options, bad, counts, log, pool, pass1_rule)
  split_names = ('all',) if vocab_from else SPLITS
  if not rows.sum():
    raise ValueError(f'no valid rows in {paths}; {bad.summary()}')
  if rule['mode'] == 'files' and not rows[0]:
    raise ValueError(f'no valid training rows in {rule["files"]["train"]}: the vocabularies '
                     f'are fitted on them; {bad.summary()}')
  split_record = {k: v for k, v in rule.items() if k != 'file_split'}
  t1 = time.perf_counter()

  # Vocabularies (train rows only), saved with the data; scoring reuses the given ones.
  if vocab_from:
    vocab, scen_vocab = load_vocab(vocab_from)
    vocab.update(load_vocab(vocab_from, sequence=True))
    shutil.copy(os.path.join(vocab_from, 'vocab.npz'), os.path.join(tmp, 'vocab.npz'))
  else:
    vocab = {f: c.vocabulary(options.min_count) for f, c in zip(fields, counts)}
    # A shared sequence field takes the scalar field's vocabulary (fitted on the scalar values
    # only, so adding a history column never changes the scalar field's ids).
    for f, shared, c in zip(seq_fields, spec.seq_shared_names, counts[len(fields):]):
      vocab[f] = vocab[shared] if shared else c.vocabulary(options.min_count)
    scen_vocab = counts[-1].vocabulary(1) if spec.scenario else None
    arrays = {f'{f}/keys': k for f, (k, _) in vocab.items()}
    arrays.update({f'{f}/counts': c for f, (_, c) in vocab.items()})
    if scen_vocab is not None:
      arrays['__scenario__/keys'], arrays['__scenario__/counts'] = scen_vocab
    np.savez(os.path.join(tmp, 'vocab.npz'), **arrays)
  schema = Schema(dense_names=spec.dense_names, cat_names=fields,
                  vocab_sizes=tuple(len(vocab[f][0]) + 1 for f in fields),
                  num_scenarios=len(scen_vocab[0]) + 1 if spec.scenario else 0,
                  seq_names=seq_fields, seq_vocab_sizes=tuple(len(vocab[f][0]) + 1 for f in seq_fields),
                  seq_shared=spec.seq_shared_names if seq_fields else (),
                  seq_len=spec.seq_max_len if seq_fields else 0)
  meta = {
      'format_version': FORMAT_VERSION, 'schema': schema.to_json(),
      'spec': dataclasses.asdict(spec), 'options': dataclasses.asdict(options),
      'vocab_from': vocab_from, 'sources': [os.path.abspath(p) for p in paths],
      'split': split_record,
  }
  with open(os.path.join(tmp, 'schema.json'), 'w') as f:
    json.dump(meta, f, indent=2)

  # Pass 2: encode the spilled keys straight into the final columns. Each chunk's rows of a
  # split go to a known offset, so chunks can be written in any order, by any process.
  for i, name in enumerate(split_names):
    os.makedirs(os.path.join(tmp, name))
    n = int(rows[i])
    cols = {'label': ((n,), np.float32), 'cat': ((n, len(fields)), np.int32)}
    if spec.dense_names:
      cols['dense'] = ((n, len(spec.dense_names)), np.float32)
    if spec.scenario:
      cols['scenario'] = ((n,), np.int32)
    if seq_fields:
      cols['seq'] = ((n, len(seq_fields), spec.seq_max_len), np.int32)
    for c, (shape, dt) in cols.items():
      np.lib.format.open_memmap(os.path.join(tmp, name, f'{c}.npy'), 'w+', dt, shape).flush()
  chunk_rows = [np.bincount(np.load(os.path.join(spill, f'{c:06d}.split.npy')),
                            minlength=len(split_names)) for c in range(chunks)]
  starts = np.cumsum([np.zeros(len(split_names), np.int64)] + chunk_rows, axis=0)
  vocab_path = os.path.join(tmp, 'vocab.npz')
  items = ((c, spill, tmp, list(zip(split_names, starts[c].tolist())), vocab_path, options.threads)
           for c in range(chunks))
  for _ in ordered(pool, _encode_one, items, 4):
    pass
  seconds = time.perf_counter() - t0
  total = int(rows.sum())
  summary = {
      'rows': {name: int(n) for name, n in zip(split_names, rows)},
      'bad_rows': bad.to_json(), 'bad_total': bad.total,
      'seconds': round(seconds, 3), 'pass1_seconds': round(t1 - t0, 3),
      'rows_per_second': round(total / seconds), 'split': split_record,
  }
  log(f'prepared {total:,} rows ({", ".join(f"{k} {v:,}" for k, v in summary["rows"].items())}) '
      f'in {seconds:.1f} s ({summary["rows_per_second"]:,} rows/s)')
  log(bad.summary())
  return summary


def _keep_freed_memory():
  """Asks glibc to reuse freed memory instead of returning it to the OS after every chunk.

  Each chunk allocates tens of MB of short-lived arrays; by default glibc maps and unmaps
  them, and the page faults on fresh pages cost about a quarter of the preprocessing time.
  """
  try:
    libc = ctypes.CDLL('libc.so.6')
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (its maximum): serve arrays < 32 MiB from the heap
    libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep up to 1 GiB of freed heap
    libc.mallopt(-2, 64 << 20)  # M_TOP_PAD: grow the heap in 64 MiB steps
  except (OSError, AttributeError):  # not glibc: only slower
    pass
