"""Scanned DeRes: source_scan (buffer rebuilt in the backward pass) against plain nn.scan autodiff.

  python benchmarks/bench_source_scan.py --depth=8 --steps=12
  python benchmarks/bench_source_scan.py --depth=32 --steps=3

Builds the same DeRes config with `scan_layers=True` twice through `bench_train.build` (the
trainer's own train step): once as the library runs it (`models/source_scan.py`), once with
`CTRTransformer._rebuild_sources` patched to return False, so that nn.scan's autodiff stores
the [N_slots, T, B, D] source buffer at every block. PreNorm under scan is the reference.
The three steps are timed interleaved (`bench_train.time_steps`); prints the median step
time, XLA's step memory (arguments + temporaries) and the compile time of each.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_train  # pylint: disable=g-import-not-at-top,wrong-import-position
from deres_jax.config import base_config  # pylint: disable=wrong-import-position
from deres_jax.models import transformer  # pylint: disable=wrong-import-position


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--depth', type=int, default=8)
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--batch', type=int, default=1024)
  p.add_argument('--steps', type=int, default=12)
  p.add_argument('--warmup', type=int, default=2)
  a = p.parse_args()
  schema = bench_train.criteo_schema()
  c = base_config()
  c.model.update(connector='deres', depth=a.depth, width=a.width,
                 num_heads=4, tokenizer='group', num_tokens=8, block_size=4, scan_layers=True)
  runs = {'source_scan': bench_train.build(c, schema, a.batch)}
  original = transformer.CTRTransformer._rebuild_sources
  transformer.CTRTransformer._rebuild_sources = lambda self, train: False
  try:
    runs['nn.scan'] = bench_train.build(c, schema, a.batch)
  finally:
    transformer.CTRTransformer._rebuild_sources = original
  c.model.connector = 'prenorm'
  runs['prenorm'] = bench_train.build(c, schema, a.batch)
  bench_train.time_steps(runs, a.batch, a.steps, a.warmup)
  print(f'depth {a.depth}, width {a.width}, batch {a.batch}, scan_layers=True; median of {a.steps} steps')
  for name, r in runs.items():
    label = name if name != 'prenorm' else 'prenorm (reference)'
    print(f"{label:20s} step {r['step_ms']:9.1f} ms  mem {r['step_memory_mb']:8.1f} MB  "
          f"compile {r['compile_s']:4.1f} s")
  print(f"source_scan / nn.scan: step {runs['source_scan']['step_ms'] / runs['nn.scan']['step_ms']:.3f}, "
        f"memory {runs['source_scan']['step_memory_mb'] / runs['nn.scan']['step_memory_mb']:.3f}")


if __name__ == '__main__':
  main()
