"""Preprocessing speed: synthetic Criteo-format text -> prepared splits; rows/s and peak RSS.

  python benchmarks/bench_preprocess.py --rows=2000000
  python benchmarks/bench_preprocess.py --rows=2000000 --gzip   # read train.txt.gz

The text is generated once into --dir (tab separated, 40 fields, ~8% of rows with stripped
trailing fields, realistic missing rates and Zipf-distributed categories). Preparation runs
in a fresh process so that its peak resident memory is measured alone. Reference: FuxiCTR's
pandas preprocessing, about 16,000-21,700 rows/s and 9.5 GB peak for 1.2M rows
(research/verified.md).
"""
import argparse
import gzip
import multiprocessing
import os
import resource
import shutil
import sys
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pa_csv

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))


def write_criteo_text(path: str, rows: int, seed: int = 0, block: int = 250_000):
  """Writes `rows` synthetic Criteo rows (Kaggle train.txt layout) to `path`."""
  rng = np.random.default_rng(seed)
  vocab = np.geomspace(4, 3_000_000, 26).astype(np.int64)   # raw cardinality per C field
  tables = [pa.array([f'{h:08x}' for h in rng.integers(0, 1 << 32, v)]) for v in vocab]
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    for start in range(0, rows, block):
      n = min(block, rows - start)
      cols = {'label': pa.array(rng.random(n) < 0.25, pa.bool_()).cast(pa.int8())}
      for i in range(13):
        v = np.floor(rng.pareto(0.8 + 0.1 * i, n) * (3 + i)).astype(np.int64) - (i == 1)
        cols[f'I{i + 1}'] = pa.array(v, mask=rng.random(n) < 0.05 * (i % 5))
      for i, t in enumerate(tables):
        idx = np.minimum(rng.zipf(1.2, n) - 1, len(t) - 1)
        cols[f'C{i + 1}'] = t.take(pa.array(idx, mask=rng.random(n) < 0.04 * (i % 4)))
      sink = pa.BufferOutputStream()
      pa_csv.write_csv(pa.table(cols), sink, pa_csv.WriteOptions(
          include_header=False, delimiter='\t', quoting_style='none'))
      text = sink.getvalue().to_pybytes()
      # Strip the trailing empty fields of rows that end in them, as some Kaggle rows are.
      lines = text.split(b'\n')
      for j in range(0, len(lines), 12):
        lines[j] = lines[j].rstrip(b'\t')
      f.write(b'\n'.join(lines))


def _prepare(src, out, processes):
  from deres_jax.data import criteo, preprocess  # pylint: disable=g-import-not-at-top
  preprocess.prepare(criteo.spec(), [src], out,
                     preprocess.Options(min_count=10, processes=processes), overwrite=True)


def _tree_rss(proc) -> int:
  """Resident bytes of a process and all its children (the worker processes)."""
  total = 0
  for p in [proc] + proc.children(recursive=True):
    try:
      total += p.memory_info().rss
    except psutil.NoSuchProcess:
      pass
  return total


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--rows', type=int, default=2_000_000)
  ap.add_argument('--dir', default='/tmp/deres_bench_preprocess')
  ap.add_argument('--gzip', action='store_true', help='read gzipped text')
  ap.add_argument('--processes', type=int, default=0, help='0 = one per core')
  args = ap.parse_args()
  os.makedirs(args.dir, exist_ok=True)
  src = os.path.join(args.dir, f'criteo_{args.rows}.txt' + ('.gz' if args.gzip else ''))
  if not os.path.exists(src):
    t = time.perf_counter()
    write_criteo_text(src + '.part', args.rows)
    os.rename(src + '.part', src)
    print(f'wrote {src} ({os.path.getsize(src) / 2**20:,.0f} MiB) in {time.perf_counter() - t:.0f} s')
  out = os.path.join(args.dir, 'prepared')
  t = time.perf_counter()
  p = multiprocessing.get_context('spawn').Process(target=_prepare, args=(src, out, args.processes))
  p.start()
  proc, peak = psutil.Process(p.pid), 0
  while p.is_alive():  # sample the summed RSS of the preparing process and its workers
    try:
      peak = max(peak, _tree_rss(proc))
    except psutil.NoSuchProcess:
      break
    time.sleep(0.05)
  p.join()
  seconds = time.perf_counter() - t
  if p.exitcode:
    sys.exit(p.exitcode)
  largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
  print(f'criteo-format text, {args.rows:,} rows ({os.path.getsize(src) / 2**20:,.0f} MiB), '
        f'{os.cpu_count()} cores: {args.rows / seconds:,.0f} rows/s end to end (process start '
        f'included), {seconds:.1f} s; peak RSS {peak / 2**30:.2f} GiB summed over the processes '
        f'(largest single process {largest:.2f} GiB)')
  shutil.rmtree(out, ignore_errors=True)


if __name__ == '__main__':
  main()
