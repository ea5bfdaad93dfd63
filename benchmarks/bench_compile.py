"""Compile time of the DeRes train step against depth, with and without nn.scan.

  python benchmarks/bench_compile.py                 # depths 4 8 16 32, scan and unrolled
  python benchmarks/bench_compile.py --depths 4 32 --unrolled_max 8

With scan_layers=True the blocks are one scanned body over stacked parameters (DeRes's
depth-attention sources live in a fixed-size buffer with a mask), so compile time should
not grow with depth. Goal: depth 32 compiles in under 1.5x the time of depth 4.
"""
import argparse
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # pylint: disable=g-import-not-at-top,wrong-import-position

from deres_jax.config import base_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--depths', type=int, nargs='+', default=[4, 8, 16, 32])
  p.add_argument('--model', default='deres')
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--batch', type=int, default=1024)
  p.add_argument('--unrolled_max', type=int, default=16, help='largest depth compiled unrolled')
  a = p.parse_args()
  schema = bench_train.criteo_schema()
  results = {}
  for scan in (True, False):
    for depth in a.depths:
      if not scan and depth > a.unrolled_max:
        continue
      c = base_config()
      c.model.update(connector=a.model, depth=depth, width=a.width, tokenizer='group',
                     num_tokens=8, block_size=4, scan_layers=scan)
      r = bench_train.build(c, schema, a.batch)
      results[(scan, depth)] = r['compile_s']
      print(f"{'scan' if scan else 'unrolled':8s} depth {depth:3d}: compile {r['compile_s']:6.2f} s",
            flush=True)
  scan_depths = [d for d in a.depths if (True, d) in results]
  if len(scan_depths) > 1:
    lo, hi = min(scan_depths), max(scan_depths)
    print(f'scan: depth {hi} / depth {lo} compile-time ratio '
          f'{results[(True, hi)] / results[(True, lo)]:.2f} (goal < 1.5)')
  un = [d for d in a.depths if (False, d) in results]
  if len(un) > 1:
    print(f'unrolled: depth {max(un)} / depth {min(un)} compile-time ratio '
          f'{results[(False, max(un))] / results[(False, min(un))]:.2f}')


if __name__ == '__main__':
  main()
