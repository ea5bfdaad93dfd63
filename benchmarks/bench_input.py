"""Input pipeline speed: prepared columns -> sharded device batches, beside the train step.

  python benchmarks/bench_input.py                      # 300k synthetic Criteo rows, prepared once
  python benchmarks/bench_input.py --data=/data/criteo_x4 --batch_size=10000

Measures (1) the loader alone: BatchIterator gathers over the memory-mapped .npy columns
plus jax.make_array_from_process_local_data onto the 'data' mesh axis, blocked until the
arrays are on device; (2) the training rate of trainer.train_and_evaluate at the base
config's model size on the same data. Goal: the loader is at least 10x the step's rate.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=wrong-import-position

from benchmarks.bench_preprocess import write_criteo_text  # pylint: disable=wrong-import-position
from deres_jax import data as data_lib  # pylint: disable=wrong-import-position
from deres_jax.config import base_config  # pylint: disable=wrong-import-position
from deres_jax.data import criteo, iterator, preprocess  # pylint: disable=wrong-import-position
from deres_jax.train import trainer  # pylint: disable=wrong-import-position


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--data', default='', help='a prepared Criteo directory (default: make one)')
  ap.add_argument('--rows', type=int, default=300_000)
  ap.add_argument('--batch_size', type=int, default=base_config().train.batch_size)
  ap.add_argument('--loader_batches', type=int, default=300)
  ap.add_argument('--train_steps', type=int, default=30)
  args = ap.parse_args()
  path = args.data
  if not path:
    root = os.path.join(tempfile.gettempdir(), 'deres_bench_input')
    path = os.path.join(root, f'criteo_{args.rows}')
    if not os.path.exists(path):
      os.makedirs(root, exist_ok=True)
      src = os.path.join(root, 'criteo.txt')
      write_criteo_text(src, args.rows)
      preprocess.prepare(criteo.spec(), [src], path, preprocess.Options(min_count=10))
  config = base_config()
  config.data.name, config.data.path = 'criteo', path
  ds = data_lib.load(config.data)
  mesh = trainer.make_mesh(config.mesh)
  sharding = NamedSharding(mesh, P('data'))
  print(f'{jax.device_count()} {jax.devices()[0].platform} device(s), batch {args.batch_size}, '
        f'{len(ds.splits["train"]["label"]):,} train rows, {len(ds.schema.cat_names)} fields')

  # (1) The loader alone.
  it = iterator.BatchIterator(ds.splits['train'], args.batch_size, seed=0)
  jax.block_until_ready(iterator.to_global(next(it), sharding))  # warm up
  t = time.perf_counter()
  for _ in range(args.loader_batches):
    jax.block_until_ready(iterator.to_global(next(it), sharding))
  loader = args.loader_batches * args.batch_size / (time.perf_counter() - t)

  # (2) The train step at the base config's model size (compile time excluded by the trainer).
  config.train.batch_size, config.train.num_steps = args.batch_size, args.train_steps
  config.train.progress, config.train.log_every = False, args.train_steps
  config.eval.every_steps, config.ckpt.every_steps = args.train_steps, 0
  with tempfile.TemporaryDirectory() as workdir:
    summary = trainer.train_and_evaluate(config, workdir, dataset=ds)
  step = summary['examples_per_second']
  print(f'loader alone: {loader:,.0f} examples/s; train step (base model, {summary["num_params"]:,} '
        f'params): {step:,.0f} examples/s; loader / step = {loader / step:.1f}x')


if __name__ == '__main__':
  main()
