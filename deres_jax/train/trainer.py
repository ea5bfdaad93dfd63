"""train_and_evaluate: the one linear training function of every family, by banner sections.

family -> mesh -> data -> task (model, loss, evaluation) -> optimizer -> shardings & init ->
train step -> restore -> loop -> final evaluation & summary. A family (`config.family`:
'ctr', 'multiscenario', 'genrec') plugs in as a bundle of pure functions (train/family.py);
everything below is the same for all of them:

  * one run per workdir (a lock file) and a resumed run refuses a changed model/data/optimiser
    field in one sentence (train/workdir.py);
  * exact resume: the train state (with a model's non-trainable collections, e.g. STAR's
    per-scenario batch statistics: `Task.model_state`), the data position (= the step) and the
    loop's bookkeeping are checkpointed by Orbax; SIGTERM/SIGINT save and exit with 143;
  * a non-finite loss or gradient never reaches the parameters (train/step.py), and with
    `train.nonfinite='stop'` the run stops naming the step and the last good checkpoint;
  * the best model by `eval.monitor` in WORKDIR/best (restored for the test split), early
    stopping (`eval.patience`), reduce-on-plateau (`optim.plateau_factor`);
  * metrics.jsonl (`train/...`, `eval/...`, `test/...`) from process 0, summary.json written
    atomically; `train_seconds` excludes evaluation and the first step of each run (compile);
  * multi-host: batches are each process's rows of the global batch, preemption flags are
    agreed across processes at log steps.
"""
import contextlib
import json
import os
import time

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from deres_jax import config as config_lib
from deres_jax.data import iterator as iterator_lib
from deres_jax.train import checkpoint as ckpt_lib
from deres_jax.train import family as family_lib
from deres_jax.train import preemption
from deres_jax.train import workdir as workdir_lib
from deres_jax.train.metric_writer import MetricWriter
from deres_jax.train.optim import make_optimizer
from deres_jax.train.step import create_state_from, make_train_step


Preempted = preemption.Preempted  # SIGTERM/SIGINT: checkpoint saved, exit code 143


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


def to_host(x):
  """Device array -> numpy, gathering across processes when the array spans several."""
  if jax.process_count() > 1:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, dataset=None,
                       devices=None, allow_config_change: bool = False) -> dict:
  """Trains the model of `config` (any family), checkpointing in `workdir`; returns the summary.

  Args:
    config: a config of any family (`config.family`, default 'ctr'; train/family.py).
    workdir: directory for metrics.jsonl, summary.json, config.json, checkpoints/ and best/.
      Rerunning with the same workdir resumes from the newest checkpoint.
    dataset: optional preloaded dataset of the family (skips `Family.load`).
    devices: devices of the mesh (default: all of `jax.devices()`).
    allow_config_change: resume even if the config differs from WORKDIR/config.json in
      fields outside `workdir.MAY_CHANGE` (default: stop naming them).
  Returns:
    The summary dict also written to WORKDIR/summary.json.
  Raises:
    ConfigError: an impossible config, or a changed config on resume (one sentence).
    WorkdirBusyError: another live process trains in `workdir` (its lock file).
    NonFiniteError: a non-finite loss or gradient with `train.nonfinite='stop'`.
    Preempted: SIGTERM/SIGINT arrived; a checkpoint was saved (exit code 143).
  """
  devices = jax.devices() if devices is None else list(devices)
  family = family_lib.get(config)
  family.validate(config, num_devices=len(devices))
  _make_workdir(workdir)
  with workdir_lib.lock(workdir, jax.process_index()):
    return _train_and_evaluate(family, config, workdir, dataset, devices, allow_config_change)


def _train_and_evaluate(family, config, workdir, dataset, devices, allow_config_change):
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

  # ---------------------------------------------------------------- Data & task.
  ds = dataset if dataset is not None else family.load(config)
  task = family.build(config, ds, workdir, mesh)
  num_steps, eval_every = schedule(config, len(next(iter(task.train.values()))))

  # ---------------------------------------------------------------- Optimizer, shardings & init.
  tx = make_optimizer(config.optim, num_steps)
  state, state_sharding = create_state_from(task.init, tx, mesh, config.sharding_rules,
                                            config.seed, task.model_state)

  # ---------------------------------------------------------------- Train step.
  stop_on_nonfinite = config.train.nonfinite == 'stop'
  train_step = make_train_step(task.loss, tx, mesh, state_sharding, stop_on_nonfinite)
  # Reduce-on-plateau (optim.plateau_factor): the learning-rate scale lives in the train state,
  # so it is checkpointed with it and a resumed run continues with the same rates.
  scale_lr = jax.jit(lambda st: dict(st, lr_scale=st['lr_scale'] * config.optim.plateau_factor),
                     donate_argnums=0, out_shardings=state_sharding)

  # ---------------------------------------------------------------- Restore.
  ckpt, best_ckpt, state, meta = _restore(workdir, config, state, writer, is_main)
  start_step = int(jax.device_get(state['step']))
  # The data position is the step: batch k is a fixed function of (seed, k) (data/iterator.py).
  data_iter = iterator_lib.BatchIterator(
      task.train, config.train.batch_size, seed=config.seed, position=start_step,
      process_index=jax.process_index(), process_count=jax.process_count(), columns=None,
      buckets=task.buckets)
  # Per-step metrics not yet logged when the checkpoint was written come back with it (float64
  # JSON numbers, back to float32 exactly), so the next log line averages the same steps.
  pending = [{k: np.float32(v) for k, v in x.items()} for x in meta.pop('pending_metrics', [])]
  clock = _Clock()

  # ---------------------------------------------------------------- Train loop.
  ckpt_every, log_every = config.ckpt.every_steps, config.train.log_every
  step, signalled = start_step, None
  pbar = _progress(config, start_step, num_steps, is_main)
  # Inside the loop every host<->device transfer is explicit (Prefetch's device_put,
  # jax.device_get); train.transfer_guard='disallow' turns any implicit one into an error.
  device_batches = iterator_lib.Prefetch(
      data_iter if task.prepare is None else map(task.prepare, data_iter),
      NamedSharding(mesh, P('data')), size=2)
  # ckpt: an error inside the loop still waits for the checkpoint being written.
  with preemption.Listener() as preempt, ckpt, device_batches, \
       jax.transfer_guard(config.train.transfer_guard):
    while step < num_steps and not meta['stopped_early']:
      state, m = train_step(state, next(device_batches))
      step += 1
      pending.append(m)
      clock.after_step(step - start_step, state)
      # Bound how far the host dispatches ahead of the devices: with many steps in flight between
      # log steps, XLA:CPU's virtual devices deadlock in the gradient all-reduce (seen at
      # log_every=100 on 8 CPU devices). Waiting (no transfer) on an older step's metrics costs
      # nothing on accelerators, whose queues stay MAX_INFLIGHT_STEPS deep.
      if len(pending) > MAX_INFLIGHT_STEPS:
        jax.block_until_ready(pending[-MAX_INFLIGHT_STEPS - 1])
      last = step == num_steps
      log_now, eval_now = step % log_every == 0 or last, step % eval_every == 0 or last
      ckpt_now = bool(ckpt_every and step % ckpt_every == 0) or last
      signalled = preemption.agreed_signal(preempt, signalled, log_now)
      if log_now:
        _write_train_metrics(writer, step, pending, state, data_iter, pbar)
        pending = []
      # With nonfinite='stop' the flag is read at every log line and before any evaluation or
      # checkpoint (not every step: that would sync host and device), so no checkpoint or
      # best model is ever written after a non-finite update.
      if stop_on_nonfinite and (log_now or eval_now or ckpt_now or signalled):
        _stop_if_nonfinite(state, ckpt, pbar)
      if eval_now:
        with clock.paused():
          state = _validate(config, task, state, step, writer, best_ckpt, meta, scale_lr, is_main)
      if ckpt_now or meta['stopped_early'] or signalled:
        _save(ckpt, best_ckpt, step, state, meta, clock, pending)
      if pbar is not None:
        pbar.update(1)
      if signalled:
        preemption.exit_preempted(signalled, step, ckpt, pbar, is_main)
  if pbar is not None:
    pbar.close()
  ckpt.wait()
  steps_this_run, run_seconds = step - start_step, clock.train_seconds()
  meta['train_seconds'] += run_seconds
  meta['compile_seconds'] += clock.compile_seconds

  # ---------------------------------------------------------------- Final evaluation & summary.
  final_params, final_step = _weights(state), step
  if config.eval.restore_best and best_ckpt.steps():
    final_step, best, _ = best_ckpt.restore(ckpt_lib.abstract(_best_item(state)))
    final_params = _weights(best)
  with jax.transfer_guard('allow'):
    summary = task.summary(final_params, final_step)
  timed = (steps_this_run - 1) * config.train.batch_size  # the first step of a run compiles
  summary = {'family': family_lib.name_of(config), **summary, **_loop_summary(meta, step),
             'epochs': step / data_iter.batches_per_epoch,
             'examples_per_second': timed / run_seconds if timed > 0 and run_seconds > 0 else None,
             'devices': len(devices), 'processes': jax.process_count()}
  summary = json.loads(json.dumps(summary, default=float))  # numpy scalars -> JSON numbers
  ckpt.close()
  best_ckpt.close()
  if is_main:
    workdir_lib.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  return summary


def _loop_summary(meta, step) -> dict:
  """The loop's own fields of summary.json (every family has them, with the same meaning)."""
  return {'steps': step, 'best_step': meta['best_step'], 'stopped_early': meta['stopped_early'],
          'lr_reductions': meta['lr_reductions'], 'train_seconds': meta['train_seconds'],
          'compile_seconds': meta['compile_seconds']}

def _restore(workdir, config, state, writer, is_main):
  """(checkpointer, best-model checkpointer, state, loop bookkeeping) at the newest checkpoint."""
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), config.ckpt.max_to_keep)
  # Best-model checkpoints are kept back to the newest one at or before the oldest regular
  # checkpoint, so whichever regular step a run resumes from, the best model of that history
  # is still there; steps newer than the resumed one (from a killed run) are dropped.
  best_ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, 'best'), None, async_save=False)
  meta = {'best_value': -np.inf, 'best_step': -1, 'bad_evals': 0, 'stopped_early': False,
          'train_seconds': 0.0, 'compile_seconds': 0.0, 'lr_reductions': 0}
  restored = ckpt.restore(ckpt_lib.abstract(state))
  if restored is not None:
    start_step, state, saved_meta = restored
    meta.update(saved_meta)
    if is_main:
      print(f'Resuming from step {start_step} in {workdir}/checkpoints', flush=True)
  start_step = int(jax.device_get(state['step']))
  best_ckpt.delete_after(start_step)
  writer.drop_after(start_step)  # lines a killed run wrote after its last checkpoint
  return ckpt, best_ckpt, state, meta


def _save(ckpt, best_ckpt, step, state, meta, clock, pending):
  """A regular checkpoint: the state plus the loop's bookkeeping (the metrics not yet logged)."""
  meta_now = dict(meta, data_position=step,  # batches taken: the data iterator's whole state
                  train_seconds=meta['train_seconds'] + clock.train_seconds(),
                  compile_seconds=meta['compile_seconds'] + clock.compile_seconds,
                  pending_metrics=[{k: float(v) for k, v in x.items()}
                                   for x in jax.device_get(pending)])
  ckpt.save(step, state, meta_now)
  regular = ckpt.steps()
  older_best = [b for b in best_ckpt.steps() if regular and b <= regular[0]]
  if older_best:
    best_ckpt.keep_only_from(older_best[-1])

class _Clock:
  """Training time of this run without evaluation and without its first step (compilation).
  Later compilations (a new input shape, e.g. another length bucket) count as training time."""

  def __init__(self):
    self.start, self.excluded, self.compile_seconds = time.perf_counter(), 0.0, 0.0

  def after_step(self, steps_this_run, state):
    if steps_this_run == 1:  # the first step traces and compiles: timed apart
      jax.block_until_ready(state['step'])
      now = time.perf_counter()
      self.compile_seconds, self.start, self.excluded = now - self.start, now, 0.0

  def train_seconds(self):
    return time.perf_counter() - self.start - self.excluded

  @contextlib.contextmanager
  def paused(self):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.excluded += time.perf_counter() - t0


def _validate(config, task, state, step, writer, best_ckpt, meta, scale_lr, is_main):
  """Validation at `step`: metrics.jsonl, the best model, early stopping, reduce-on-plateau."""
  with jax.transfer_guard('allow'):  # evaluation is no hot path: families may move data freely
    val = task.evaluate(_weights(state), 'val', step)
  writer.write(step, {f'eval/{k}': v for k, v in val.items()})
  if _track_best(config, task, meta, val, step, is_main):
    if config.eval.restore_best:
      best_ckpt.save(step, _best_item(state),
                     {f'val_{config.eval.monitor}': float(val[config.eval.monitor])})
  elif config.optim.plateau_factor:
    state = scale_lr(state)
    meta['lr_reductions'] += 1
  return state


def _best_item(state) -> dict:
  """What a best-model checkpoint holds: the parameters (and the model state, if any)."""
  return {k: state[k] for k in ('params', 'model_state') if k in state}


def _weights(state):
  """What evaluation reads: the parameters, or with a model state (STAR's per-scenario running
  statistics) the Flax variables {'params': ..., **collections} (train/family.py Task)."""
  if 'model_state' not in state:
    return state['params']
  return {'params': state['params'], **state['model_state']}


def _write_train_metrics(writer, step, pending, state, data_iter, pbar):
  """One metrics.jsonl line: the mean of each train metric over the steps since the last."""
  fetched = jax.device_get(pending)
  logged = {k: float(np.mean([x[k] for x in fetched])) for k in fetched[0]}
  logged['train/nonfinite_skipped'] = int(jax.device_get(state['nonfinite']))
  logged['epoch'] = step / data_iter.batches_per_epoch  # the prefetcher runs ahead
  writer.write(step, logged)
  if pbar is not None:
    pbar.set_postfix(loss=f"{logged['train/loss']:.4f}")


def _stop_if_nonfinite(state, ckpt, pbar):
  """Raises NonFiniteError naming the first bad step and the last good checkpoint, if any."""
  bad, first_bad = (int(x) for x in jax.device_get((state['nonfinite'],
                                                     state['first_nonfinite'])))
  if not bad:
    return
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


def _track_best(config, task, meta, val, step, is_main) -> bool:
  """Updates the best value and the early-stopping count; True when `val` is a new best."""
  monitor = config.eval.monitor
  sign = 1.0 if task.higher_is_better else -1.0
  if np.isfinite(val[monitor]) and sign * val[monitor] > meta['best_value']:
    meta.update(best_value=sign * float(val[monitor]), best_step=step, bad_evals=0)
    return True
  meta['bad_evals'] += 1
  if config.eval.patience and meta['bad_evals'] >= config.eval.patience:
    meta['stopped_early'] = True
    if is_main:
      print(f'Early stopping at step {step}: validation {monitor} has not improved for '
            f'{meta["bad_evals"]} evaluations (best {sign * meta["best_value"]:.5f} at '
            f'step {meta["best_step"]}).', flush=True)
  return False


def schedule(config, num_train: int) -> tuple:
  """(training steps, steps between validations): from train.num_epochs / eval.every_epochs
  when those are set (> 0), else train.num_steps / eval.every_steps."""
  if config.train.batch_size > num_train:
    raise config_lib.ConfigError(
        f'config.train.batch_size={config.train.batch_size} is larger than the training split '
        f'({num_train} rows): pass --config.train.batch_size=<at most that>.')
  per_epoch = max(1, num_train // config.train.batch_size)  # as BatchIterator: the remainder is dropped
  steps = (max(1, int(np.ceil(config.train.num_epochs * per_epoch))) if config.train.num_epochs
           else config.train.num_steps)
  every = (max(1, int(round(config.eval.every_epochs * per_epoch))) if config.eval.every_epochs
           else config.eval.every_steps)
  return steps, every


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

