"""One prepared accelerator benchmark (issue 19): matmul peak, DeRes vs PreNorm, MFU, input pipeline.

  python benchmarks/bench_gpu.py                 # on a GPU/TPU: the chip-filling default size
  python benchmarks/bench_gpu.py --small         # a CPU smoke run of the same script (seconds)

In one process, on the first device (no data parallelism: the MFU is per chip):
  1. the bfloat16 matmul peak: median FLOP/s of a jitted [n, n] x [n, n] product (n = 8192);
  2. DeRes (Block AttnRes + identity, SiLU depth weights, `--depth_mix` path: 'auto' picks the fused
     custom-VJP path of models/depth_mix.py on GPU/TPU), DeRes with the reference path, and a PreNorm
     Transformer of the same size, trained in bf16 on a fixed batch with their steps interleaved
     (A, B, C, A, B, C, ...) so clocks and load affect all alike: median step ms, examples/s;
  3. MFU = analytic training FLOPs (3 x forward matmul FLOPs, benchmarks/bench_train.analytic_flops)
     x examples/s / the measured matmul peak; XLA's own FLOP count is printed beside it;
  4. peak device memory (`memory_stats()['peak_bytes_in_use']` where the backend has it) and compile s;
  5. the input pipeline: the trainer's BatchIterator + Prefetch feeding DeRes steps, against the
     same steps on one resident batch; device idle = 1 - resident / fed step time.
Default size (about 2.4 GFLOP of training per example): Criteo's 39 fields into 16 RankMixer tokens
of width 512, 8 blocks, 8 heads, FFN x4, block size 2 (4 completed blocks reach the last units),
batch 8192. Prints one line per figure and the targets of issue 19 (DeRes/PreNorm <= 1.03,
MFU >= 45 %, idle < 5 %) with PASS/FAIL. Ends well inside 8 minutes on an H100/H200 (three
compiles of a few tens of seconds, 30 timed steps each).
"""
import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (benchmarks/ is not a package)

from deres_jax import models  # noqa: E402
from deres_jax.config import base_config  # noqa: E402
from deres_jax.data import iterator  # noqa: E402
from deres_jax.train import step as step_lib  # noqa: E402
from deres_jax.train import trainer  # noqa: E402
from deres_jax.train.optim import make_optimizer  # noqa: E402


def matmul_peak(n, reps=20):
  """Median FLOP/s of a bf16 [n, n] matmul over `reps` timed calls (after one warm-up)."""
  a = jnp.ones((n, n), jnp.bfloat16)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / statistics.median(times)


def make_config(a, connector, impl):
  c = base_config()
  c.compute_dtype = 'bfloat16'
  c.mesh = (('data', 1), ('model', 1))
  c.model.update(connector=connector, depth=a.depth, width=a.width, num_heads=a.heads, ffn_mult=4,
                 tokenizer='group', num_tokens=a.tokens, embed_dim=16, block_size=2, embed_cross=0)
  if 'depth_mix' in c.model and connector != 'prenorm':
    c.model.depth_mix = impl
  elif connector != 'prenorm' and impl != 'auto':
    raise SystemExit("this checkout's connector has no model.depth_mix field: only --impl auto can run")
  return c


def peak_memory_gb():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use', float('nan')) / 2 ** 30


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--depth', type=int, default=8)
  p.add_argument('--width', type=int, default=512)
  p.add_argument('--heads', type=int, default=8)
  p.add_argument('--tokens', type=int, default=16)
  p.add_argument('--batch', type=int, default=8192)
  p.add_argument('--steps', type=int, default=30)
  p.add_argument('--warmup', type=int, default=5)
  p.add_argument('--matmul', type=int, default=8192, help='n of the [n, n] bf16 matmul for the peak')
  p.add_argument('--small', action='store_true', help='a CPU smoke size (width 32, batch 256, 3 steps)')
  p.add_argument('--depth_mix', default='auto', help="the 'deres' run's path: auto | fused | reference")
  a = p.parse_args()
  if a.small:
    a.depth, a.width, a.heads, a.tokens, a.batch, a.steps, a.warmup, a.matmul = 4, 32, 2, 8, 256, 3, 1, 512
  t_start = time.perf_counter()
  dev = jax.devices()[0]
  print(f'device: {dev.device_kind} ({dev.platform}), jax {jax.__version__}')
  peak = matmul_peak(a.matmul)
  print(f'bf16 matmul peak (n={a.matmul}): {peak / 1e12:.1f} TFLOP/s')

  schema = bench_train.criteo_schema()
  runs = {}
  for name, connector, impl in (('deres', 'deres', a.depth_mix), ('deres_reference', 'deres', 'reference'),
                                ('prenorm', 'prenorm', 'auto')):
    try:
      c = make_config(a, connector, impl)
    except SystemExit as e:
      print(f'{name}: skipped ({e})')
      continue
    r = bench_train.build(c, schema, a.batch)
    r['analytic'] = bench_train.analytic_flops(c, len(schema.dense_names) + len(schema.cat_names))
    runs[name] = r
    print(f"{name}: compiled in {r['compile_s']:.1f} s, {r['num_params']:,} parameters, "
          f"{r['analytic'] / 1e9:.2f} GFLOP/example (analytic), {r['xla_flops_per_example'] / 1e9:.2f} (XLA)")
  analytic = {k: r['analytic'] for k, r in runs.items()}
  xla = {k: r['xla_flops_per_example'] for k, r in runs.items()}
  bench_train.time_steps(runs, a.batch, a.steps, a.warmup)
  for name, r in runs.items():
    mfu = analytic[name] * r['examples_per_s'] / peak
    print(f"{name:16s} step {r['step_ms']:8.2f} ms  {r['examples_per_s']:>12,.0f} ex/s  MFU {100 * mfu:5.1f} % "
          f"(XLA FLOPs: {100 * xla[name] * r['examples_per_s'] / peak:5.1f} %)")
  ratio = runs['deres']['step_ms'] / runs['prenorm']['step_ms']
  mfu = analytic['deres'] * runs['deres']['examples_per_s'] / peak
  print(f"DeRes/PreNorm step time {ratio:.3f} (FLOPs ratio {analytic['deres'] / analytic['prenorm']:.3f})")
  if 'deres_reference' in runs:
    print(f"DeRes fused/reference step time {runs['deres']['step_ms'] / runs['deres_reference']['step_ms']:.3f}")
  print(f'peak device memory {peak_memory_gb():.2f} GiB')

  # Input pipeline: the trainer's iterator + prefetch feeding DeRes steps vs one resident batch.
  c = make_config(a, 'deres', 'auto')
  mesh = trainer.make_mesh(c.mesh)
  model = models.build(c.model, schema, dtype=jnp.bfloat16)
  tx = make_optimizer(c.optim, 1000)
  rng = np.random.default_rng(0)
  rows = a.batch * (a.steps + a.warmup + 2)
  split = {'label': rng.integers(0, 2, rows).astype(np.float32),
           'dense': rng.gamma(1.0, 5.0, (rows, len(schema.dense_names))).astype(np.float32),
           'cat': np.stack([rng.zipf(1.2, rows) % v for v in schema.vocab_sizes], 1).astype(np.int32)}
  host = {k: v[:a.batch] for k, v in split.items()}
  state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, host, 0)
  step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  resident = iterator.to_global(host, sharding)
  fed = iterator.Prefetch(iterator.BatchIterator(split, a.batch, seed=0), sharding, size=2)
  # Timed in the same process right after each other; the resident batch is the lower bound.

  def timed(next_batch, state):
    for _ in range(a.warmup):
      state, m = step(state, next_batch())
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(a.steps):
      state, m = step(state, next_batch())
    jax.block_until_ready(m)
    return (time.perf_counter() - t) / a.steps, state

  t_res, state = timed(lambda: resident, state)
  with fed:
    t_fed, state = timed(lambda: next(fed), state)
  idle = max(0.0, 1 - t_res / t_fed)
  print(f'input pipeline: {1000 * t_fed:.2f} ms/step fed vs {1000 * t_res:.2f} resident: '
        f'device idle {100 * idle:.1f} %')
  print(f"targets: DeRes/PreNorm <= 1.03 {'PASS' if ratio <= 1.03 else 'FAIL'}; MFU >= 45 % "
        f"{'PASS' if mfu >= 0.45 else 'FAIL'}; idle < 5 % {'PASS' if idle < 0.05 else 'FAIL'}")
  print(f'total {time.perf_counter() - t_start:.0f} s')


if __name__ == '__main__':
  main()
