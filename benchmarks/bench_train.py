"""Train-step benchmark: examples/s, step ms, compile s, memory, FLOPs and achieved FLOP/s.

  python benchmarks/bench_train.py --model=deres --depth=8 --width=64
  python benchmarks/bench_train.py --model=dcnv2 --batch=4096

Measures, in one process on the default device(s):
  * compile seconds of the jitted train step (the same `deres_jax.train.step.make_steps` the trainer uses);
  * step time: median over --steps steps after --warmup, and examples/s = batch / median
    (with --model=deres/attnres, DeRes and PreNorm steps are interleaved, so machine load
    affects both alike);
  * memory: XLA's memory analysis of the compiled step (arguments + temporaries) and the
    process's peak RSS;
  * model FLOPs per example: an analytic count (forward matmuls x 3 for forward + backward)
    cross-checked with XLA's cost analysis of the step (of an unrolled lowering: XLA counts a
    scan body once);
  * achieved FLOP/s as a fraction of this machine's matmul peak, measured in the same run
    with a large jnp.dot (float32, or bfloat16 with --dtype=bfloat16);
  * for --model=deres (or attnres), the same measurement for PreNorm at the same size and the
    step-time ratio, measured in the same run.
"""
import argparse
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from deres_jax import models
from deres_jax.config import base_config
from deres_jax.data import iterator
from deres_jax.data.schema import Schema
from deres_jax.train import step as step_lib
from deres_jax.train import trainer
from deres_jax.train.optim import make_optimizer

CRITEO_VOCAB = tuple(int(v) for v in np.geomspace(10, 100_000, 26))


def criteo_schema():
  """Criteo's layout: 13 dense and 26 categorical fields (vocabularies 10 to 100k rows)."""
  return Schema(dense_names=tuple(f'I{i}' for i in range(13)),
                cat_names=tuple(f'C{i}' for i in range(26)), vocab_sizes=CRITEO_VOCAB)


def matmul_peak(dtype, n=4096, reps=10):
  """Measured FLOP/s of a large square matmul on the first device."""
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(reps):
    out = f(a)
  out.block_until_ready()
  return 2 * n ** 3 * reps / (time.perf_counter() - t)


def analytic_flops(c, num_fields):
  """Forward+backward matmul FLOPs per example (3x the forward multiply-adds x 2)."""
  m = c.model
  if m.name == 'dcnv2':
    x = num_fields * m.embed_dim
    fwd = m.num_cross * x * x
    prev = x
    for h in m.dnn_hidden:
      fwd += prev * h
      prev = h
    fwd += x + prev
    return 3 * 2 * fwd
  t = m.num_tokens if m.tokenizer == 'group' else num_fields
  d, e = m.width, m.embed_dim
  fwd = (num_fields * e * d if m.tokenizer == 'group' else (0 if e == d else num_fields * e * d))
  per_block = t * (4 * d * d + 2 * m.ffn_mult * d * d) + 2 * t * t * d  # QKV+O, FFN, scores+values
  fwd += m.depth * per_block
  if m.connector != 'prenorm':  # depth attention: scores + weighted sum over the sources
    units = m.depth * (2 if m.layer_unit == 'sublayer' else 1)
    slots = 1 + -(-units // m.block_size)
    fwd += (units + 1) * 2 * slots * t * d
  prev = t * d if m.head_pool == 'flatten' else d
  for h in m.head_hidden:
    fwd += prev * h
    prev = h
  fwd += prev
  return 3 * 2 * fwd


def build(c, schema, batch_size):
  """Compiles the trainer's own train step for config c; returns a dict describing it."""
  mesh = trainer.make_mesh(c.mesh)
  model_config = c.model.copy_and_resolve_references()
  dtype = jnp.bfloat16 if c.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(model_config, schema, dtype=dtype)
  tx = make_optimizer(c.optim, 1000)
  rng = np.random.default_rng(0)
  host = {'label': rng.integers(0, 2, batch_size).astype(np.float32),
          'dense': rng.gamma(1.0, 5.0, (batch_size, len(schema.dense_names))).astype(np.float32),
          'cat': np.stack([rng.zipf(1.2, batch_size) % v for v in schema.vocab_sizes], 1).astype(np.int32)}
  state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, host, 0)
  step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  batch = iterator.to_global(host, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
  t = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  # XLA counts a scan body once, so FLOPs come from an unrolled lowering (not compiled).
  flops_step = step
  if getattr(model_config, 'scan_layers', False):
    with model_config.unlocked():
      model_config.scan_layers = False
    unrolled = models.build(model_config, schema, dtype=dtype)
    ustate, ushard = step_lib.create_state(unrolled, tx, mesh, c.sharding_rules, host, 0)
    flops_step, _ = step_lib.make_steps(unrolled, tx, mesh, ushard)
    cost = flops_step.lower(ustate, batch).cost_analysis()
  else:
    cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  return {
      'run': compiled, 'state': state, 'batch': batch, 'times': [],
      'compile_s': compile_s,
      'xla_flops_per_example': float(cost.get('flops', float('nan'))) / batch_size,
      'analytic_flops_per_example': analytic_flops(c, len(schema.dense_names) + len(schema.cat_names)),
      'step_memory_mb': ((mem.argument_size_in_bytes + mem.temp_size_in_bytes) / 2 ** 20
                         if mem is not None else float('nan')),
      'num_params': int(sum(np.prod(x.shape) for x in jax.tree.leaves(state['params']))),
  }


def time_steps(runs, batch_size, steps, warmup):
  """Times the runs' steps interleaved (A, B, A, B, ...) so machine load affects all alike."""
  for i in range(warmup + steps):
    for r in runs.values():
      t = time.perf_counter()
      r['state'], metrics = r['run'](r['state'], r['batch'])
      jax.block_until_ready(metrics)
      if i >= warmup:
        r['times'].append(time.perf_counter() - t)
  for r in runs.values():
    r['step_ms'] = 1000 * statistics.median(r['times'])
    r['examples_per_s'] = batch_size / statistics.median(r['times'])
    for k in ('run', 'state', 'batch', 'times'):
      del r[k]


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--model', default='deres', help='deres | attnres | prenorm | dcnv2')
  p.add_argument('--depth', type=int, default=8)
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--tokens', type=int, default=8, help='RankMixer tokens (tokenizer=group)')
  p.add_argument('--tokenizer', default='group')
  p.add_argument('--block_size', type=int, default=4)
  p.add_argument('--layer_unit', default='sublayer',
                 help="sublayer: 2 connected units per block (AttnRes); block: 1 per block")
  p.add_argument('--batch', type=int, default=1024)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--dtype', default='float32', help='float32 | bfloat16 (compute dtype)')
  p.add_argument('--scan', type=int, default=0, help='0: unrolled blocks (the default), 1: nn.scan')
  p.add_argument('--json', default='', help='also write the results to this file')
  a = p.parse_args()

  schema = criteo_schema()
  c = base_config()
  c.compute_dtype = a.dtype
  if a.model == 'dcnv2':
    c.model = models.model_config('dcnv2', embed_dim=16, num_cross=3, dnn_hidden=(400, 400, 400))
  else:
    c.model.update(connector=a.model, depth=a.depth, width=a.width,
                   num_heads=a.heads, tokenizer=a.tokenizer, num_tokens=a.tokens,
                   layer_unit=a.layer_unit, scan_layers=bool(a.scan),
                   block_size=min(a.block_size, a.depth * (2 if a.layer_unit == 'sublayer' else 1)))
  peak = matmul_peak(jnp.bfloat16 if a.dtype == 'bfloat16' else jnp.float32)
  runs = {a.model: build(c, schema, a.batch)}
  if a.model in ('deres', 'attnres'):
    c.model.connector = 'prenorm'
    runs['prenorm'] = build(c, schema, a.batch)
  time_steps(runs, a.batch, a.steps, a.warmup)
  device = jax.devices()[0]
  print(f'device: {device.device_kind} x{jax.device_count()} ({device.platform}); '
        f'measured {a.dtype} matmul peak {peak / 1e9:,.1f} GFLOP/s')
  for name, r in runs.items():
    achieved = r['xla_flops_per_example'] * r['examples_per_s']
    r['achieved_gflops'] = achieved / 1e9
    r['fraction_of_peak'] = achieved / peak
    print(f"{name:8s} step {r['step_ms']:8.2f} ms  {r['examples_per_s']:>10,.0f} ex/s  "
          f"compile {r['compile_s']:5.1f} s  mem {r['step_memory_mb']:7.1f} MB  "
          f"params {r['num_params']:,}  FLOPs/ex analytic {r['analytic_flops_per_example'] / 1e6:.2f}M "
          f"XLA {r['xla_flops_per_example'] / 1e6:.2f}M  "
          f"achieved {r['achieved_gflops']:.1f} GFLOP/s = {100 * r['fraction_of_peak']:.1f}% of peak")
  if 'prenorm' in runs and len(runs) == 2:
    r = runs[a.model]['step_ms'] / runs['prenorm']['step_ms']
    f = runs[a.model]['xla_flops_per_example'] / runs['prenorm']['xla_flops_per_example']
    print(f'{a.model}/prenorm: step time ratio {r:.3f}, FLOPs ratio {f:.3f}')
  print(f'peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB')
  if a.json:
    with open(a.json, 'w') as f:
      json.dump({'args': vars(a), 'peak_flops': peak, 'runs': runs}, f, indent=2)


if __name__ == '__main__':
  main()
