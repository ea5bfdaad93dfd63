"""train_and_evaluate for the multi-scenario family, on the CTR library's pieces.

mesh -> data -> model & optimizer -> shardings & init -> step functions -> restore -> loop
-> final per-scenario evaluation & summary. Reused, not copied: `train.step` (train state
materialised into its shardings, the jitted train step that adds `aux['losses']`, e.g.
MI-DPG's MI term), `train.optim`, `train.checkpoint` (Orbax, fallback to older steps),
`train.metric_writer`, `data.iterator` (resumable batches, prefetch). What is new: the
evaluation is per scenario (AUC, logloss, weighted AUC, MI estimate), `eval.monitor` may be
'wauc', and the summary splits the parameters into embedding, shared and scenario-specific.
Single-process (the CTR trainer's multi-host path is not wired here).
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from deres_jax.data import iterator as iterator_lib
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import load as load_data
from deres_jax.multiscenario import metrics as ms_metrics
from deres_jax.multiscenario import models
from deres_jax.train import checkpoint as ckpt_lib
from deres_jax.train import workdir as workdir_lib
from deres_jax.train.metric_writer import MetricWriter
from deres_jax.train.optim import make_optimizer
from deres_jax.train.step import create_state, make_steps
from deres_jax.train import trainer as ctr_trainer
from deres_jax.train.trainer import make_mesh


def evaluate(predict, mi_fn, params, split, names, batch_size, sharding, step):
  """Per-scenario metrics of one split (+ the mean MI estimate over its batches)."""
  step = jax.device_put(np.int32(step), NamedSharding(sharding.mesh, P()))
  outs, mis = [], []
  for batch, _ in iterator_lib.eval_batches(split, batch_size):
    batch = iterator_lib.to_global(batch, sharding)
    outs.append(predict(params, batch, step))
    mis.append(mi_fn(params, batch))
  logits = np.concatenate([np.asarray(jax.device_get(o)) for o in outs])[:len(split['label'])]
  result = ms_metrics.by_scenario(split['label'], logits, split['scenario'], names)
  result['mi'] = float(np.mean(jax.device_get(mis)))  # padded last batch included: an estimate
  return result


def train_and_evaluate(config, workdir: str, dataset=None, devices=None,
                       allow_config_change: bool = False) -> dict:
  """Trains `config.model` on `config.data`, checkpointing in `workdir`; returns the summary.

  Args:
    config: a config built from `multiscenario.config.base_config()`.
    workdir: metrics.jsonl, summary.json, checkpoints/ and best/; rerunning resumes.
    dataset: optional preloaded `MultiScenarioData` (skips loading `config.data`).
    devices: devices of the mesh (default: all of `jax.devices()`).
    allow_config_change: resume even if the config differs from WORKDIR/config.json.
  Returns:
    The summary dict also written to WORKDIR/summary.json.
  Raises:
    WorkdirBusyError: another live process trains in `workdir`.
    ConfigError (a ValueError): a resumed run whose config differs from the checkpoints'.
  """
  devices = jax.devices() if devices is None else list(devices)
  config_lib.validate(config, len(devices))
  os.makedirs(workdir, exist_ok=True)
  # One run per workdir and no silent config drift on resume: the CTR trainer's rules.
  with workdir_lib.lock(workdir):
    if ckpt_lib.has_checkpoints(os.path.join(workdir, 'checkpoints')):
      workdir_lib.check_config(workdir, config, allow_config_change)
    return _train_and_evaluate(config, workdir, dataset, devices)


def _train_and_evaluate(config, workdir, dataset, devices):
  """The body of `train_and_evaluate`, run while holding the workdir's lock."""
  # ---------------------------------------------------------------- Config & mesh.
  mesh = make_mesh(config.mesh, devices)
  writer = MetricWriter(workdir)
  workdir_lib.write_json_atomic(os.path.join(workdir, 'config.json'),
                                json.loads(config.to_json_best_effort()))

  # ---------------------------------------------------------------- Data.
  ds = dataset if dataset is not None else load_data(config.data)
  train_split, val_split, test_split = (ds.splits[k] for k in ('train', 'val', 'test'))
  sharding = NamedSharding(mesh, P('data'))

  # ---------------------------------------------------------------- Model & optimizer.
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(config.model, ds.schema, dtype=dtype)
  num_steps = config.train.num_steps
  tx = make_optimizer(config.optim, num_steps)

  # ---------------------------------------------------------------- Shardings, init, steps.
  dummy = {k: v[:2] for k, v in train_split.items() if k in iterator_lib.TRAIN_COLUMNS}
  state, state_sharding = create_state(model, tx, mesh, config.sharding_rules, dummy, config.seed)
  sizes = models.param_counts(state['params'])
  train_step, predict = make_steps(model, tx, mesh, state_sharding, config.optim.embed_l2,
                                   True, config.optim.embed_l2_rows)
  mi_fn = jax.jit(lambda params, batch: model.apply({'params': params}, batch)[1].get(
      'mi', jnp.zeros(())))

  # ---------------------------------------------------------------- Restore.
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), config.ckpt.max_to_keep)
  best_ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'best'), 1, async_save=False)
  monitor = config.eval.monitor
  sign = -1.0 if monitor == 'logloss' else 1.0
  meta = {'best_value': -np.inf, 'best_step': -1, 'train_seconds': 0.0}
  restored = ckpt.restore(ckpt_lib.abstract(state))
  if restored is not None:
    _, state, saved = restored
    meta.update(saved)
    print(f'Resuming from step {int(jax.device_get(state["step"]))} in {workdir}', flush=True)
  start = step = int(jax.device_get(state['step']))
  writer.drop_after(start)
  data_iter = iterator_lib.BatchIterator(train_split, config.train.batch_size, seed=config.seed,
                                         position=start)

  # ---------------------------------------------------------------- Train loop.
  pending, t0, names = [], time.perf_counter(), ds.scenario_names
  with ckpt, iterator_lib.Prefetch(data_iter, sharding, size=2) as batches:
    while step < num_steps:
      state, m = train_step(state, next(batches))
      step += 1
      pending.append(m)
      if len(pending) > ctr_trainer.MAX_INFLIGHT_STEPS:  # bounded run-ahead (deres_jax/train/trainer.py)
        jax.block_until_ready(pending[-ctr_trainer.MAX_INFLIGHT_STEPS - 1])
      last = step == num_steps
      if step % config.train.log_every == 0 or last:
        fetched = jax.device_get(pending)
        pending = []
        writer.write(step, {k: float(np.mean([x[k] for x in fetched])) for k in fetched[0]})
        if int(jax.device_get(state['nonfinite'])):
          raise FloatingPointError(f'non-finite loss or gradients before step {step}; lower '
                                   'optim.learning_rate or set optim.grad_clip.')
      if step % config.eval.every_steps == 0 or last:
        val = evaluate(predict, mi_fn, state['params'], val_split, names, config.eval.batch_size,
                       sharding, step)
        writer.write(step, ms_metrics.flat(val, 'eval') | {'eval/mi': val['mi']})
        if np.isfinite(val[monitor]) and sign * val[monitor] > meta['best_value']:
          meta.update(best_value=sign * val[monitor], best_step=step)
          if config.eval.restore_best:
            best_ckpt.save(step, {'params': state['params']}, {monitor: val[monitor]})
      if (config.ckpt.every_steps and step % config.ckpt.every_steps == 0) or last:
        ckpt.save(step, state, dict(meta, train_seconds=meta['train_seconds'] +
                                    time.perf_counter() - t0))
  seconds = time.perf_counter() - t0
  meta['train_seconds'] += seconds if step > start else 0.0

  # ---------------------------------------------------------------- Final evaluation.
  params, final_step = state['params'], step
  if config.eval.restore_best and best_ckpt.steps():
    final_step, best, _ = best_ckpt.restore({'params': ckpt_lib.abstract(state['params'])})
    params = best['params']
  test = evaluate(predict, mi_fn, params, test_split, names, config.eval.batch_size, sharding,
                  final_step)
  oracle = (ms_metrics.by_scenario(test_split['label'], _logit(test_split['prob']),
                                   test_split['scenario'], names) if 'prob' in test_split else None)
  summary = {
      'model': config.model.name, 'dataset': ds.source, 'target': ds.target,
      'params': sizes, 'flops_per_example': model.flops_per_example()['total'],
      'test': test, 'oracle': oracle, 'steps': step, 'best_step': meta['best_step'],
      'train_seconds': meta['train_seconds'],
      'examples_per_second': ((step - start) * config.train.batch_size / seconds
                              if step > start else None),
      'devices': len(devices), 'data_notes': ds.notes}
  ckpt.close()
  best_ckpt.close()
  summary = json.loads(json.dumps(summary, default=float))  # numpy scalars -> plain JSON numbers
  workdir_lib.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  return summary


def _logit(p):
  p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
  return np.log(p) - np.log1p(-p)


def apply_model_flags(config, pairs):
  """--config.model.<field>=<text> pairs (launch/train.py): name first, then the fields."""
  import ast  # pylint: disable=g-import-not-at-top
  with config.unlocked():
    for key, text in pairs:
      if key == 'name' and text != config.model.name:
        old, new = config.model, models.model_config(text)
        defaults = models.fields(old.name)
        for k in new:  # a field with the same default means the same in both (sizes carry)
          if k != 'name' and k in old and k in defaults and defaults[k][0] == new[k]:
            new[k] = old[k]
        config.model = new
    for key, text in pairs:
      if key == 'name':
        continue
      if key not in config.model:
        raise ValueError(f'model {config.model.name!r} has no field {key!r}; its fields are '
                         f'{list(models.fields(config.model.name))}.')
      default = config.model[key]
      value = text if isinstance(default, str) else ast.literal_eval(text)
      with config.model.ignore_type():
        config.model[key] = tuple(value) if isinstance(value, list) else value
  return config


def print_summary(summary: dict):
  test, oracle = summary['test'], summary['oracle']
  print(f"Test split of {summary['dataset']} (target {summary['target']}), model "
        f"{summary['model']}:")
  print(f"{'scenario':>12} {'rows':>7} {'AUC':>7} {'logloss':>8} {'oracle AUC':>11}")
  for name, m in test['scenarios'].items():
    o = oracle['scenarios'][name]['auc'] if oracle else float('nan')
    print(f"{name:>12} {m['rows']:>7} {m['auc']:>7.4f} {m['logloss']:>8.4f} {o:>11.4f}")
  print(f"{'overall':>12} {'':>7} {test['auc']:>7.4f} {test['logloss']:>8.4f} "
        f"{oracle['auc'] if oracle else float('nan'):>11.4f}")
  print(f"weighted AUC {test['wauc']:.4f}, MI estimate {test['mi']:.4f}, unseen-scenario rows "
        f"{test['unseen_rows']}, params {summary['params']}")


def main(config, workdir: str, model_flags=(), allow_config_change: bool = False) -> int:
  """launch/train.py's entry for family='multiscenario': train, print, exit code."""
  try:
    config = apply_model_flags(config, model_flags)
    summary = train_and_evaluate(config, workdir, allow_config_change=allow_config_change)
  except (ValueError, FileNotFoundError, ckpt_lib.CheckpointError, FloatingPointError,
          workdir_lib.WorkdirBusyError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print_summary(summary)
  return 0
