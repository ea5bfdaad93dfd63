"""mHC's Sinkhorn-Knopp on CPU: a Python-unrolled loop against the library's `lax.scan`.

  PYTHONPATH=. python benchmarks/bench_sinkhorn.py [--iters=20] [--steps=10]

Prints, measured in this run and interleaved (A, B, A, B, ...) so machine load hits both alike:
  1. the gradient of Sinkhorn-Knopp alone on [T=8, B=256, 4, 4] logits (mHC's H^res of one
     unit): median ms, unrolled vs scan, and the largest gradient difference (0: same arithmetic);
  2. the train step of the main table's mHC row (configs/tables/main.py, synthetic data,
     batch 256, the trainer's own `step.make_steps`) with each Sinkhorn: median ms, examples/s
     and the ratio, plus the PreNorm row's step for scale.
"""
import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  pylint: disable=g-import-not-at-top

from deres_jax import config as config_lib  # noqa: E402
from deres_jax import data as data_lib  # noqa: E402
from deres_jax.models import hyper_connections  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unrolled(logits, iters):
  """The earlier implementation: the same iterations as a Python loop."""
  m = jnp.moveaxis(logits, (-2, -1), (0, 1))
  m = jnp.exp(m - jnp.max(m, axis=(0, 1), keepdims=True))
  for _ in range(iters):
    m = m / jnp.sum(m, axis=1, keepdims=True)
    m = m / jnp.sum(m, axis=0, keepdims=True)
  return jnp.moveaxis(m, (0, 1), (-2, -1))


def _interleaved(fns, reps):
  times = {k: [] for k in fns}
  for _ in range(reps):
    for k, f in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(f())
      times[k].append(time.perf_counter() - t)
  return {k: 1000 * statistics.median(v) for k, v in times.items()}


def sinkhorn_alone(iters, reps):
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 256, 4, 4))
  w = jnp.arange(16.0).reshape(4, 4)
  grads = {name: jax.jit(jax.grad(lambda v, f=f: jnp.sum(f(v, iters) * w)))
           for name, f in (('unrolled', unrolled), ('scan', hyper_connections.sinkhorn))}
  diff = float(jnp.max(jnp.abs(grads['unrolled'](x) - grads['scan'](x))))
  ms = _interleaved({k: (lambda g=g: g(x)) for k, g in grads.items()}, reps)
  print(f'Sinkhorn-Knopp gradient, {iters} iterations on [8, 256, 4, 4]: unrolled {ms["unrolled"]:.2f} ms, '
        f'scan {ms["scan"]:.2f} ms ({ms["unrolled"] / ms["scan"]:.1f}x); max |grad difference| {diff:.1e}')


def table_step(steps, warmup):
  table = config_lib.load_table(os.path.join(ROOT, 'configs', 'tables', 'main.py'))
  base = table.base_config('synthetic', '', 'converged')
  schema = data_lib.load(base.data).schema
  runs = {}
  for name, row, impl in (('mHC, unrolled Sinkhorn', 'mHC', unrolled),
                          ('mHC, scan Sinkhorn', 'mHC', hyper_connections.sinkhorn),
                          ('PreNorm', 'PreNorm Transformer', None)):
    c = table.ROWS[row](table.base_config('synthetic', '', 'converged'))
    saved = hyper_connections.sinkhorn
    if impl is not None:
      hyper_connections.sinkhorn = impl   # read when the step is traced (in build)
    try:
      runs[name] = bench_train.build(c, schema, c.train.batch_size)
    finally:
      hyper_connections.sinkhorn = saved
  batch = base.train.batch_size
  bench_train.time_steps(runs, batch, steps, warmup)
  for name, r in runs.items():
    print(f'{name:24s} step {r["step_ms"]:7.2f} ms  {r["examples_per_s"]:9,.0f} examples/s  '
          f'(compile {r["compile_s"]:.1f} s)')
  a, b = runs['mHC, unrolled Sinkhorn'], runs['mHC, scan Sinkhorn']
  print(f'mHC train step: scan is {a["step_ms"] / b["step_ms"]:.1f}x faster than unrolled; '
        f'mHC (scan) / PreNorm step time {b["step_ms"] / runs["PreNorm"]["step_ms"]:.1f}x')


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--iters', type=int, default=20)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=2)
  a = p.parse_args()
  sinkhorn_alone(a.iters, 5 * a.steps)
  table_step(a.steps, a.warmup)


if __name__ == '__main__':
  main()
