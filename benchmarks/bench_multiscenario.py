"""Multi-scenario train-step benchmark: step time of every model on the same batch, same run,
and each model's analytic forward FLOPs checked against XLA's count.

  python benchmarks/bench_multiscenario.py                      # hidden (256, 128), batch 512
  python benchmarks/bench_multiscenario.py --hidden=64,32 --models=midpg,star
  python benchmarks/bench_multiscenario.py --models=star,star:partition_norm=batch,midpg

A model may carry field overrides, `name:field=value[;field=value]` (one row each; the default
list adds STAR with the paper's per-domain batch statistics, `star:partition_norm=batch`).

For every model of `deres_jax.multiscenario.models.MODELS` (default sizes, the given hidden
widths) it compiles the trainer's own train step (`train.step.make_steps`) on one synthetic
batch (4 scenarios), then times the steps interleaved (A, B, C, A, B, C, ...) so machine load
affects every model alike, and prints the median step time. The compile time is reported
apart and never enters the step time. FLOPs: `flops_per_example()['total']` (forward, per
example) against XLA's cost analysis of the jitted forward `model.apply` divided by the batch;
the check passes within --flops_tol (25 %). It ends with the MI-DPG / STAR step-time ratio
(the issue-32 target: <= 1.5 at hidden (256, 128)).
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from deres_jax.data import iterator
from deres_jax.multiscenario import models, synthetic
from deres_jax.multiscenario.config import base_config
from deres_jax.train import step as step_lib
from deres_jax.train import trainer
from deres_jax.train.optim import make_optimizer


def parse_row(row: str):
  """'star:partition_norm=batch;x=1' -> ('star', {'partition_norm': 'batch', 'x': 1})."""
  name, _, rest = row.partition(':')
  if name not in models.MODELS:
    raise SystemExit(f'--models: unknown model {name!r} in {row!r}; choose from {sorted(models.MODELS)}')
  fields = {}
  for item in filter(None, rest.split(';')):
    key, eq, value = item.partition('=')
    if not eq:
      raise SystemExit(f'--models: {item!r} in {row!r} is not field=value')
    fields[key] = value
    for cast in (int, float):
      try:
        fields[key] = cast(value)
        break
      except ValueError:
        pass
  return name, fields


def build(row, hidden, data, batch_size, mesh):
  """Compiles the train step of model row `row` ('name[:field=value;...]'); returns a dict describing it."""
  name, fields = parse_row(row)
  c = base_config()
  c.model = models.model_config(name, hidden=hidden)
  for key, value in fields.items():
    if key not in c.model:
      raise SystemExit(f'--models: model {name!r} has no field {key!r}')
    c.model[key] = value
  model = models.build(c.model, data.schema)
  host = {k: v[:batch_size] for k, v in data.splits['train'].items() if k in iterator.TRAIN_COLUMNS}
  tx = make_optimizer(c.optim, 1000)
  state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, host, 0)
  step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  batch = iterator.to_global(host, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
  t = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  other = state.get('model_state', {})   # e.g. STAR's per-scenario 'batch_stats' (inference path)
  fwd = jax.jit(lambda p, b: model.apply({'params': p, **other}, b)[0]).lower(
      state['params'], {k: jnp.asarray(v) for k, v in host.items()}).cost_analysis()
  fwd = fwd[0] if isinstance(fwd, (list, tuple)) else fwd
  return {'run': compiled, 'state': state, 'batch': batch, 'times': [], 'compile_s': compile_s,
          'xla_flops': float(fwd.get('flops', float('nan'))) / batch_size,
          'analytic_flops': float(model.flops_per_example()['total']),
          'params': models.param_counts(state['params'])}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--models', default=','.join(list(models.MODELS) + ['star:partition_norm=batch']),
                 help="comma-separated model names, each optionally 'name:field=value[;field=value]'")
  p.add_argument('--hidden', default='256,128', help='backbone widths of every model')
  p.add_argument('--batch', type=int, default=512)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--flops_tol', type=float, default=0.25)
  a = p.parse_args()
  hidden = tuple(int(h) for h in a.hidden.split(','))
  names = [n.strip() for n in a.models.split(',') if n.strip()]
  data = synthetic.generate(synthetic.MultiScenarioSpec(num_train=a.batch, num_val=8, num_test=8))
  mesh = trainer.make_mesh((('data', -1), ('model', 1)))
  runs = {n: build(n, hidden, data, a.batch, mesh) for n in names}
  for i in range(a.warmup + a.steps):  # interleaved: load affects every model alike
    for r in runs.values():
      t = time.perf_counter()
      r['state'], metrics = r['run'](r['state'], r['batch'])
      jax.block_until_ready(metrics)
      if i >= a.warmup:
        r['times'].append(time.perf_counter() - t)
  dev = jax.devices()[0]
  print(f'device: {dev.device_kind} x{jax.device_count()} ({dev.platform}); batch {a.batch}, '
        f'hidden {hidden}, {a.steps} timed steps (median), 4 scenarios')
  print(f"{'model':>26} {'step ms':>9} {'compile s':>10} {'FLOPs/ex analytic':>18} {'XLA':>9} "
        f"{'ratio':>6} {'check':>6} {'params (dense)':>15}")
  bad = []
  for n, r in runs.items():
    r['step_ms'] = 1000 * statistics.median(r['times'])
    ratio = r['analytic_flops'] / r['xla_flops']
    ok = abs(ratio - 1) <= a.flops_tol
    bad += [] if ok else [n]
    dense = r['params']['total'] - r['params']['embedding']
    print(f"{n:>26} {r['step_ms']:>9.2f} {r['compile_s']:>10.1f} {r['analytic_flops'] / 1e6:>17.3f}M "
          f"{r['xla_flops'] / 1e6:>8.3f}M {ratio:>6.2f} {'ok' if ok else 'OFF':>6} {dense:>15,}")
  if 'midpg' in runs and 'star' in runs:
    print(f"MI-DPG / STAR step-time ratio: {runs['midpg']['step_ms'] / runs['star']['step_ms']:.2f}")
  if bad:
    print(f'analytic FLOPs off by more than {a.flops_tol:.0%} from XLA: {bad}')


if __name__ == '__main__':
  main()
