"""What asking a DeRes model for its depth weights costs, and what normal training pays for it.

  python benchmarks/bench_anatomy.py                          # depth 4, block_size 2, width 64
  python benchmarks/bench_anatomy.py --depth=8 --width=128

The connectors sow their depth-attention weights (`sow('intermediates', 'depth_weights', ...)`,
read by `deres_jax/anatomy.py`). Two measurements:

1. Normal training: the trainer's own train step (`step.make_steps`) is lowered twice, once as
   is and once with `nn.Module.sow` replaced by a no-op; the StableHLO texts are compared. Equal
   text means normal training runs the same program as a model without any sow: it pays nothing.
2. On request: the jitted forward pass and a gradient step, each without and with
   `mutable=['intermediates']` (the weights returned), timed interleaved in rotating order,
   median milliseconds per call.
"""
import argparse
import statistics
import sys
import time
from unittest import mock

import flax.linen as nn
import jax
import numpy as np
import optax

import bench_train  # noqa: E402  (benchmarks/ is not a package)
from deres_jax.config import base_config
from deres_jax import models
from deres_jax.train import step as step_lib
from deres_jax.train import trainer
from deres_jax.train.optim import make_optimizer


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--connector', default='deres', help='deres | attnres')
  p.add_argument('--depth', type=int, default=4)
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--block_size', type=int, default=2)
  p.add_argument('--batch', type=int, default=1024)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--scan', type=int, default=0, help='1: nn.scan blocks (sowing then uses plain nn.scan)')
  a = p.parse_args()

  c = base_config()
  c.model.update(connector=a.connector, depth=a.depth, width=a.width, block_size=a.block_size,
                 tokenizer='group', num_tokens=8, scan_layers=bool(a.scan))
  schema = bench_train.criteo_schema()
  model = models.build(c.model, schema)
  rng = np.random.default_rng(0)
  batch = {'label': rng.integers(0, 2, a.batch).astype(np.float32),
           'dense': rng.gamma(1.0, 5.0, (a.batch, len(schema.dense_names))).astype(np.float32),
           'cat': np.stack([rng.zipf(1.2, a.batch) % v for v in schema.vocab_sizes], 1).astype(np.int32)}
  print(f'{a.connector} depth {a.depth} width {a.width} block_size {a.block_size} batch {a.batch} '
        f'scan {a.scan} on {jax.devices()[0].device_kind}', flush=True)

  # ---------------------------------------------------------------- 1. Normal training's program.
  mesh = trainer.make_mesh(c.mesh)
  tx = make_optimizer(c.optim, 1000)
  state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, batch, 0)

  def lowered_text():
    train_step, _ = step_lib.make_steps(model, tx, mesh, shardings)  # a fresh jit: traced anew
    return train_step.lower(state, batch).as_text()
  with_sow = lowered_text()
  with mock.patch.object(nn.Module, 'sow', lambda self, *args, **kw: False):
    without_sow = lowered_text()
  same = with_sow == without_sow
  print(f'trainer train step: StableHLO with sow == with sow removed: {same} '
        f'({len(with_sow.splitlines())} lines)', flush=True)

  # ---------------------------------------------------------------- 2. Cost on request.
  params = state['params']

  def forward(p, b):
    return model.apply({'params': p}, b)[0]

  def forward_sown(p, b):
    (logits, _), st = model.apply({'params': p}, b, mutable=['intermediates'])
    return logits, st['intermediates']

  def loss(p, b, sown):
    if sown:
      (logits, _), st = model.apply({'params': p}, b, mutable=['intermediates'])
      return optax.sigmoid_binary_cross_entropy(logits, b['label']).mean(), st['intermediates']
    logits = model.apply({'params': p}, b)[0]
    return optax.sigmoid_binary_cross_entropy(logits, b['label']).mean(), {}

  def grad_step(sown):
    def f(p, b):
      g, inter = jax.grad(loss, has_aux=True)(p, b, sown)
      return jax.tree.map(lambda x, y: x - 1e-3 * y, p, g), inter
    return f

  runs = {'forward': jax.jit(forward), 'forward + depth weights': jax.jit(forward_sown),
          'grad step': jax.jit(grad_step(False)), 'grad step + depth weights': jax.jit(grad_step(True))}
  times = {k: [] for k in runs}
  for k, f in runs.items():
    jax.block_until_ready(f(params, batch))  # compile
  order = list(runs)
  for i in range(a.steps + 2):
    # Each round in another order (rotated), so no variant always runs after the same other one.
    for k in order[i % len(order):] + order[:i % len(order)]:
      f = runs[k]
      t = time.perf_counter()
      jax.block_until_ready(f(params, batch))
      if i >= 2:
        times[k].append(time.perf_counter() - t)
  ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
  for k in runs:
    base = k.replace(' + depth weights', '')
    ratio = f'  ({ms[k] / ms[base]:.3f}x of {base})' if base != k else ''
    print(f'{k:28s} {ms[k]:8.2f} ms{ratio}')
  return 0 if same else 1


if __name__ == '__main__':
  sys.exit(main())
