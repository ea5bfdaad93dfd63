"""Orbax checkpoints of the train state plus JSON metadata (data position, early stopping).

A checkpoint is written atomically by Orbax (to a temporary directory, renamed when
complete), so a kill during a save leaves the previous step usable; the next run deletes
such temporary directories. `restore` tries the newest step first and falls back to older
ones if a step cannot be read (a truncated or missing file), warning with what was wrong.
A write error (a full disk) surfaces as `CheckpointError`, at the save or, for an
asynchronous save, at the next save or `wait`; earlier checkpoints are left as they were.

Checksums: once a step is committed, the SHA-256 of every file it wrote is recorded in
`<directory>/sha256/<step>.json` (process 0, written atomically). `restore` verifies them
first, so corruption that keeps a file's length (a flipped byte) is detected, named and
skipped like a truncated file. A step without a record (written before checksums existed,
or killed between commit and record) is restored unverified.
"""
import hashlib
import json
import logging
import os
import sys

from absl import logging as absl_logging
import jax
import orbax.checkpoint as ocp


# Replica-parallel saving splits every replicated array across its replicas, compiling a
# jit(slice) per array shape (~50 ms each on CPU, over 100 per run for a small model). Only
# arrays large enough to gain from parallel writes are split.
_verbosity = absl_logging.get_verbosity()
absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax warns that the handler is replaced
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=64 << 20),
    override=True)
absl_logging.set_verbosity(_verbosity)


class CheckpointError(RuntimeError):
  """No usable checkpoint, or a checkpoint could not be written."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` saving {'state': pytree, 'meta': json}."""

  def __init__(self, directory: str, max_to_keep: int | None = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._async = async_save
    # cleanup_tmp_directories: a kill during a save leaves a '<step>.orbax-checkpoint-tmp'
    # directory that Orbax ignores when listing steps; delete it at start-up.
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'meta'))
    self._saving = None  # step of the last save started, named by a late (async) error

  def steps(self) -> list:
    return sorted(self.manager.all_steps())

  # ---------------------------------------------------------------- Checksums.
  def _sums_path(self, step: int) -> str:
    return os.path.join(self.directory, 'sha256', f'{step}.json')

  def _record_checksums(self):
    """Records the checksums of committed steps that have none yet (process 0)."""
    if jax.process_index() != 0:
      return
    for step in self.steps():
      path = self._sums_path(step)
      if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f'{path}.tmp'
        with open(tmp, 'w') as f:
          json.dump(_file_digests(os.path.join(self.directory, str(step))), f)
        os.replace(tmp, path)
    # Records of steps Orbax has deleted (max_to_keep) go too.
    for name in os.listdir(os.path.join(self.directory, 'sha256')) if os.path.isdir(
        os.path.join(self.directory, 'sha256')) else ():
      if name.endswith('.json') and name[:-5].isdigit() and int(name[:-5]) not in self.steps():
        os.remove(os.path.join(self.directory, 'sha256', name))

  def verify(self, step: int) -> str:
    """'' if the files of `step` match their recorded checksums (or none are recorded), else
    a sentence naming the first file that differs."""
    path = self._sums_path(step)
    if not os.path.exists(path):
      return ''
    with open(path) as f:
      want = json.load(f)
    have = _file_digests(os.path.join(self.directory, str(step)))
    for name, digest in want.items():
      if have.get(name) != digest:
        return (f'checksum mismatch in {name}' if name in have else f'{name} is missing')
    return ''

  def delete_after(self, step: int):
    """Deletes the steps newer than `step` (a best-model checkpoint of a killed run)."""
    for s in self.steps():
      if s > step:
        self.manager.delete(s)
        with _suppress_missing():
          os.remove(self._sums_path(s))

  def keep_only_from(self, step: int):
    """Deletes the steps older than `step`."""
    for s in self.steps():
      if s < step:
        self.manager.delete(s)
        with _suppress_missing():
          os.remove(self._sums_path(s))

  def save(self, step: int, state, meta: dict, force: bool = True):
    self.wait()  # an error of the previous asynchronous save is reported as that step's
    if step in self.manager.all_steps():
      # Left by a run killed before its next checkpoint (the best-model checkpoint), or a
      # newer step that `restore` skipped as unusable: Orbax never overwrites a step.
      self.manager.delete(step)
    self._saving = step
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
      if not self._async:
        self._record_checksums()
    except OSError as e:
      raise CheckpointError(f'could not write the checkpoint of step {step} to {self.directory}: '
                            f'{e}. Earlier checkpoints are left as they were.') from e

  def wait(self):
    try:
      self.manager.wait_until_finished()
      self._record_checksums()
    except OSError as e:
      raise CheckpointError(f'could not write the checkpoint of step {self._saving} to '
                            f'{self.directory}: {e}. Earlier checkpoints are left as they '
                            'were.') from e

  def restore(self, abstract_state):
    """Returns (step, state, meta) of the newest readable checkpoint, or None if there is none."""
    steps, why = self.steps(), ''
    _quiet_abandoned_reads()
    for i, step in enumerate(reversed(steps)):
      try:
        bad = self.verify(step)
        if bad:
          raise CheckpointError(bad)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        if i:
          logging.warning('Resumed from step %d: newer checkpoints could not be read.', step)
        return step, restored['state'], dict(restored['meta'])
      except Exception as e:  # pylint: disable=broad-except  # any unreadable file: try older
        msg = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
        why = why or f' (step {step}: {msg[:300]})'
        logging.warning('Checkpoint of step %d in %s is unusable (%s); trying an older one.',
                        step, self.directory, msg[:300])
        print(f'warning: checkpoint step {step} in {self.directory} is unusable ({msg[:300]}); '
              'trying an older one.', file=sys.stderr, flush=True)
    if steps:
      raise CheckpointError(f'none of the checkpoints {steps} in {self.directory} could be '
                            f'read{why}; move the directory away to start from scratch.')
    return None

  def close(self):
    self.wait()
    self.manager.close()

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    """On an error in the training loop, still commits the checkpoint being written."""
    if exc_type is not None:
      try:
        self.wait()
      except CheckpointError:
        pass  # the error in flight says more


def _quiet_abandoned_reads():
  """Hides the tracebacks of reads abandoned by a failed restore.

  When one array of a step cannot be read, Orbax closes its event loop while TensorStore
  still finishes the other reads; their callbacks then raise 'Event loop is closed' (or
  the read's own error) into `sys.unraisablehook`, printing tracebacks that say nothing
  beyond the warning `restore` already gave. Other unraisable errors pass through.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'quiet_abandoned_reads', False):
    return

  def hook(unraisable):
    exc, obj = unraisable.exc_value, str(unraisable.object)
    if ((isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc)) or
        '_read_array_index_and_device_put' in obj):
      return
    previous(unraisable)

  hook.quiet_abandoned_reads = True
  sys.unraisablehook = hook
  # The same abandoned reads may instead surface, when their task is garbage-collected, as
  # asyncio's 'Task exception was never retrieved' log record for Orbax's async_deserialize.
  logging.getLogger('asyncio').addFilter(
      lambda record: not ('never retrieved' in record.getMessage() and
                          'async_deserialize' in record.getMessage()))


def has_checkpoints(directory: str) -> bool:
  """Whether `directory` holds at least one committed step (a run to resume)."""
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def _file_digests(step_dir: str) -> dict:
  """{relative path: sha256 hex} of every file under a committed step directory."""
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in sorted(files):
      full = os.path.join(root, name)
      h = hashlib.sha256()
      with open(full, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):  # pylint: disable=cell-var-from-loop
          h.update(chunk)
      out[os.path.relpath(full, step_dir)] = h.hexdigest()
  return out


class _suppress_missing:  # pylint: disable=invalid-name
  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    return exc_type is not None and issubclass(exc_type, FileNotFoundError)


def abstract(tree):
  """Shape/dtype/sharding skeleton of a pytree of jax.Arrays, the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
