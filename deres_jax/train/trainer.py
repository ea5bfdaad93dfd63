"""train_and_evaluate: the one linear training function, split by banner comments.

mesh -> data -> model & optimizer -> shardings & init -> step functions -> restore -> loop
-> final evaluation & summary. Any model of `deres_jax.models.MODELS` that maps a batch to
(logits [B], aux) trains here; nothing below is specific to DeRes.
"""
import json
import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from deres_jax import config as config_lib
from deres_jax import data as data_lib
from deres_jax import models
from deres_jax.data import iterator as iterator_lib
from deres_jax.train import checkpoint as ckpt_lib
from deres_jax.train import metrics as metrics_lib
from deres_jax.train import workdir as workdir_lib
from deres_jax.train.metric_writer import MetricWriter
from deres_jax.train.optim import make_optimizer
from deres_jax.train.step import create_state, make_steps


class NonFiniteError(FloatingPointError):
  """The loss or the gradients became NaN/Inf."""


MAX_INFLIGHT_STEPS = 4  # train steps the host may dispatch ahead of the devices


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
  """A ('data', 'model') mesh; a -1 size takes the remaining devices."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  axes = dict(mesh_config)
  fixed = int(np.prod([s for s in axes.values() if s > 0]))
  sizes = {k: (devices.size // fixed if s == -1 else s) for k, s in axes.items()}
  return jax.sharding.Mesh(devices.reshape(sizes['data'], sizes['model']), ('data', 'model'))


def _host(x):
  """Device array -> numpy, gathering across processes when the array spans several."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def evaluate(predict_fn, params, split, batch_size, batch_sharding, step=None):
  """Exact AUC and logloss of a model over a whole split (`step`: the training step of params)."""
  outs = []
  if step is not None:  # an explicit transfer (the loop runs under a transfer guard)
    step = jax.device_put(np.int32(step), NamedSharding(batch_sharding.mesh, P()))
  for batch, mask in iterator_lib.eval_batches(split, batch_size, jax.process_index(),
                                               jax.process_count()):
    outs.append(predict_fn(params, iterator_lib.to_global(batch, batch_sharding), step))
  n = len(split['label'])
  logits = np.concatenate([_host(o) for o in outs])[:n]
  probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  return {'auc': metrics_lib.auc(split['label'], logits),
          'logloss': metrics_lib.logloss_from_logits(split['label'], logits),
          'prediction/mean': float(probs.mean()), 'label/mean': float(split['label'].mean())}


def oracle_metrics(split):
  """Bayes-optimal metrics from the true probabilities (synthetic data only)."""
  if 'prob' not in split:
    return {}
  return {'auc': metrics_lib.auc(split['label'], split['prob']),
          'logloss': metrics_lib.logloss(split['label'], split['prob'])}


class _Preemption:
  """Turns SIGTERM/SIGINT into a flag checked between steps (save, then exit cleanly)."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:  # a second signal: give up at once
      raise KeyboardInterrupt
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, dataset=None,
                       devices=None, allow_config_change: bool = False) -> dict:
  """Trains `config.model` on `config.data`, checkpointing in `workdir`; returns the summary.

  Args:
    config: a config built from `deres_jax.config.base_config()`.
    workdir: directory for metrics.jsonl, summary.json and checkpoints/. Rerunning with the
      same workdir resumes from the newest checkpoint.
    dataset: optional preloaded `deres_jax.data.Dataset` (skips `data.load`).
    devices: devices of the mesh (default: all of `jax.devices()`).
    allow_config_change: resume even if the config differs from WORKDIR/config.json in
      fields outside `workdir.MAY_CHANGE` (default: stop naming them).
  Returns:
    The summary dict also written to WORKDIR/summary.json.
  Raises:
    WorkdirBusyError: another live process trains in `workdir` (its lock file).
  """
  devices = jax.devices() if devices is None else list(devices)
  config_lib.validate(config, num_devices=len(devices))
  _make_workdir(workdir)
  with workdir_lib.lock(workdir, jax.process_index()):
    return _train_and_evaluate(config, workdir, dataset, devices, allow_config_change)


def _train_and_evaluate(config, workdir, dataset, devices, allow_config_change):
  """The body of `train_and_evaluate`, run while holding the workdir's lock."""
  # ---------------------------------------------------------------- Config & mesh.
  mesh = make_mesh(config.mesh, devices)
  is_main = jax.process_index() == 0
  if ckpt_lib.has_checkpoints(os.path.join(workdir, 'checkpoints')):
    workdir_lib.check_config(workdir, config, allow_config_change)
  writer = MetricWriter(workdir)
  if is_main:
    workdir_lib.write_json_atomic(os.path.join(workdir, 'config.json'),
                                  json.loads(config.to_json_best_effort()))

  # ---------------------------------------------------------------- Data.
  ds = dataset if dataset is not None else data_lib.load(config.data)
  train_split, val_split, test_split = ds.splits['train'], ds.splits['val'], ds.splits['test']
  if config.train.batch_size > len(train_split['label']):
    raise config_lib.ConfigError(
        f'config.train.batch_size={config.train.batch_size} is larger than the training split '
        f"({len(train_split['label'])} rows): pass --config.train.batch_size=<at most that>.")
  batch_sharding = NamedSharding(mesh, P('data'))

  # ---------------------------------------------------------------- Model & optimizer.
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(config.model, ds.schema, dtype=dtype)
  num_steps, eval_every = schedule(config, len(train_split['label']))
  tx = make_optimizer(config.optim, num_steps)

  # ---------------------------------------------------------------- Shardings & init.
  dummy = {k: v[:2] for k, v in train_split.items() if k in iterator_lib.TRAIN_COLUMNS}
  state, state_sharding = create_state(model, tx, mesh, config.sharding_rules, dummy, config.seed)
  sizes = models.param_counts(state['params'])
  flops = model.flops_per_example()

  # ---------------------------------------------------------------- Step functions.
  stop_on_nonfinite = config.train.nonfinite == 'stop'
  train_step, predict = make_steps(model, tx, mesh, state_sharding, config.optim.embed_l2,
                                   stop_on_nonfinite, config.optim.embed_l2_rows)

  # ---------------------------------------------------------------- Restore.
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), config.ckpt.max_to_keep)
  # Best-model checkpoints are kept back to the newest one at or before the oldest regular
  # checkpoint, so whichever regular step a run resumes from, the best model of that history
  # is still there; steps newer than the resumed one (from a killed run) are dropped.
  best_ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'best'), None, async_save=False)
  # The monitored validation metric (eval.monitor): higher AUC or lower logloss is better.
  monitor = config.eval.monitor
  sign = 1.0 if monitor == 'auc' else -1.0
  meta = {'best_value': -np.inf, 'best_step': -1, 'bad_evals': 0, 'stopped_early': False,
          'train_seconds': 0.0, 'examples': 0}
  restored = ckpt.restore(ckpt_lib.abstract(state))
  if restored is not None:
    start_step, state, saved_meta = restored
    meta.update(saved_meta)
    if is_main:
      print(f'Resuming from step {start_step} in {workdir}/checkpoints', flush=True)
  start_step = int(jax.device_get(state['step']))
  best_ckpt.delete_after(start_step)
  writer.drop_after(start_step)  # lines a killed run wrote after its last checkpoint
  data_iter = iterator_lib.BatchIterator(
      train_split, config.train.batch_size, seed=config.seed, position=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())

  # ---------------------------------------------------------------- Train loop.
  ckpt_every, log_every = config.ckpt.every_steps, config.train.log_every
  # Reduce-on-plateau (optim.plateau_factor): the learning-rate scale lives in the train state,
  # so it is checkpointed with it and a resumed run continues with the same rates.
  plateau = config.optim.plateau_factor
  scale_lr = jax.jit(lambda st: dict(st, lr_scale=st['lr_scale'] * plateau), donate_argnums=0,
                     out_shardings=state_sharding)
  # Per-step metrics not yet logged when the checkpoint was written come back with it, so
  # the next log line averages the same steps as in an uninterrupted run.
  # Stored as float64 JSON numbers; back to float32 (exact), so the next log line's mean is
  # computed in float32 exactly as in an uninterrupted run.
  pending = [{k: np.float32(v) for k, v in x.items()} for x in meta.pop('pending_metrics', [])]
  step, loop_start = start_step, time.perf_counter()
  eval_seconds = 0.0
  pbar = _progress(config, start_step, num_steps, is_main)

  def save(step):
    meta_now = dict(meta, data_position=step, train_seconds=meta['train_seconds'] + _elapsed(),
                    pending_metrics=[{k: float(v) for k, v in x.items()}
                                     for x in jax.device_get(pending)])
    ckpt.save(step, state, meta_now)
    regular = ckpt.steps()
    older_best = [b for b in best_ckpt.steps() if regular and b <= regular[0]]
    if older_best:
      best_ckpt.keep_only_from(older_best[-1])

  def _elapsed():
    return time.perf_counter() - loop_start - eval_seconds

  # Inside the loop every host<->device transfer is explicit (Prefetch's device_put,
  # jax.device_get); train.transfer_guard='disallow' turns any implicit one into an error.
  device_batches = iterator_lib.Prefetch(data_iter, batch_sharding, size=2)
  # ckpt: an error inside the loop still waits for the checkpoint being written.
  with _Preemption() as preempt, ckpt, device_batches, \
       jax.transfer_guard(config.train.transfer_guard):
    signalled = None  # the preemption signal all processes agreed on (None: keep training)
    while step < num_steps and not meta['stopped_early']:
      batch = next(device_batches)
      state, m = train_step(state, batch)
      step += 1
      pending.append(m)
      # Bound how far the host dispatches ahead of the devices: with many steps in flight between
      # log steps, XLA:CPU's virtual devices deadlock in the gradient all-reduce (seen at
      # log_every=100 on 8 CPU devices). Waiting (no transfer) on an older step's metrics costs
      # nothing on accelerators, whose queues stay MAX_INFLIGHT_STEPS deep.
      if len(pending) > MAX_INFLIGHT_STEPS:
        jax.block_until_ready(pending[-MAX_INFLIGHT_STEPS - 1])
      last = step == num_steps
      # Preemption: one process alone must not enter the checkpoint's barriers while the others
      # go on to the next step's all-reduce. In a multi-process job the signal flags are
      # gathered at every log step, so all processes save at the same step and exit together.
      if jax.process_count() == 1:
        signalled = preempt.signal
      elif step % log_every == 0 or last:
        with jax.transfer_guard('allow'):  # an explicit, tiny host<->device exchange
          flags = multihost_utils.process_allgather(np.int32(preempt.signal is not None))
        if np.any(flags):
          signalled = preempt.signal or 'SIGTERM (received by another process)'
      if step % log_every == 0 or last:
        fetched = jax.device_get(pending)
        logged = {k: float(np.mean([x[k] for x in fetched])) for k in fetched[0]}
        pending = []
        logged['train/nonfinite_skipped'] = int(jax.device_get(state['nonfinite']))
        logged['epoch'] = step / data_iter.batches_per_epoch  # the prefetcher runs ahead
        writer.write(step, logged)
        if pbar is not None:
          pbar.set_postfix(loss=f"{logged['train/loss']:.4f}")
      # With nonfinite='stop' the flag is read at every log line and before any evaluation or
      # checkpoint (not every step: that would sync host and device), so no checkpoint or
      # best model is ever written after a non-finite update.
      if stop_on_nonfinite and (step % log_every == 0 or step % eval_every == 0 or last or
                                (ckpt_every and step % ckpt_every == 0) or signalled):
        bad, first_bad = (int(x) for x in jax.device_get((state['nonfinite'],
                                                           state['first_nonfinite'])))
        if bad:
          if pbar is not None:
            pbar.close()
          ckpt.wait()
          good = [s for s in ckpt.steps() if s <= first_bad]
          where = (f'the last good checkpoint is step {good[-1]} in {ckpt.directory}' if good
                   else 'no checkpoint was written before it')
          raise NonFiniteError(
              f'Non-finite loss or gradients at step {first_bad + 1} (the update was not applied); '
              f'{where}. Lower the learning rate, set config.optim.grad_clip, or set '
              'config.train.nonfinite="skip" to skip such updates.')
      if step % eval_every == 0 or last:
        t0 = time.perf_counter()
        val = evaluate(predict, state['params'], val_split, config.eval.batch_size, batch_sharding,
                       step)
        writer.write(step, {f'eval/{k}': v for k, v in val.items()})
        if sign * val[monitor] > meta['best_value']:
          meta.update(best_value=sign * val[monitor], best_step=step, bad_evals=0)
          if config.eval.restore_best:
            best_ckpt.save(step, {'params': state['params']}, {f'val_{monitor}': val[monitor]})
        else:
          meta['bad_evals'] += 1
          if plateau:
            state = scale_lr(state)
            meta['lr_reductions'] = meta.get('lr_reductions', 0) + 1
          if config.eval.patience and meta['bad_evals'] >= config.eval.patience:
            meta['stopped_early'] = True
            if is_main:
              print(f'Early stopping at step {step}: validation {monitor} has not improved for '
                    f'{meta["bad_evals"]} evaluations (best {sign * meta["best_value"]:.5f} at '
                    f'step {meta["best_step"]}).', flush=True)
        eval_seconds += time.perf_counter() - t0
      if (ckpt_every and step % ckpt_every == 0) or last or meta['stopped_early'] or signalled:
        save(step)
      if pbar is not None:
        pbar.update(1)
      if signalled:
        if pbar is not None:
          pbar.close()
        ckpt.wait()
        msg = (f'Received {signalled} at step {step}: checkpoint saved in {ckpt.directory}. '
               'Run the same command again to resume.')
        if is_main:
          print(msg, flush=True)
        ckpt.close()
        raise Preempted(msg)
  if pbar is not None:
    pbar.close()
  ckpt.wait()
  steps_this_run = step - start_step
  run_seconds = _elapsed()
  meta['train_seconds'] += run_seconds if steps_this_run else 0.0

  # ---------------------------------------------------------------- Final evaluation.
  final_params, final_step = state['params'], step
  if config.eval.restore_best and best_ckpt.steps():
    best = best_ckpt.restore({'params': ckpt_lib.abstract(state['params'])})
    final_params, final_step = best[1]['params'], best[0]
  val = evaluate(predict, final_params, val_split, config.eval.batch_size, batch_sharding,
                 final_step)
  test = evaluate(predict, final_params, test_split, config.eval.batch_size, batch_sharding,
                  final_step)
  oracle = oracle_metrics(test_split)
  summary = {
      'model': config.model.name, 'connector': config.model.get('connector'),
      'dataset': ds.source, 'num_params': sizes['total'],
      'embedding_params': sizes['embedding'], 'dense_params': sizes['dense'],
      'flops_per_example': flops['total'],
      'test_auc': test['auc'], 'test_logloss': test['logloss'],
      'val_auc': val['auc'], 'val_logloss': val['logloss'],
      'oracle_auc': oracle.get('auc'), 'oracle_logloss': oracle.get('logloss'),
      'steps': step, 'epochs': step / data_iter.batches_per_epoch,
      'best_step': meta['best_step'], 'stopped_early': meta['stopped_early'],
      'lr_reductions': meta.get('lr_reductions', 0),
      'train_seconds': meta['train_seconds'],
      'examples_per_second': (steps_this_run * config.train.batch_size / run_seconds
                              if steps_this_run and run_seconds > 0 else None),
      'devices': len(devices), 'processes': jax.process_count(),
  }
  ckpt.close()
  best_ckpt.close()
  if is_main:
    workdir_lib.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  return summary


def schedule(config, num_train: int) -> tuple:
  """(training steps, steps between validations): from train.num_epochs / eval.every_epochs
  when those are set (> 0), else train.num_steps / eval.every_steps."""
  per_epoch = max(1, num_train // config.train.batch_size)  # as BatchIterator: the remainder is dropped
  steps = (max(1, int(np.ceil(config.train.num_epochs * per_epoch))) if config.train.num_epochs
           else config.train.num_steps)
  every = (max(1, int(round(config.eval.every_epochs * per_epoch))) if config.eval.every_epochs
           else config.eval.every_steps)
  return steps, every


class Preempted(SystemExit):
  """Raised after a preemption checkpoint; exits with 143 (128 + SIGTERM): not finished."""

  def __init__(self, msg):
    super().__init__(143)
    self.message = msg


def _make_workdir(workdir):
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, '.write_test')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ckpt_lib.CheckpointError(f'the workdir {workdir!r} is not writable: {e.strerror}.') from e


def _progress(config, start, total, is_main):
  if not (config.train.progress and is_main):
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=start, desc='train', unit='step', dynamic_ncols=True)

