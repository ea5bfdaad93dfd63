"""Orbax checkpoints of the train state plus JSON metadata (data position, early stopping).

A checkpoint is written atomically by Orbax (to a temporary directory, renamed when
complete), so a kill during a save leaves the previous step usable. `restore` tries the
newest step first and falls back to older ones if a step cannot be read (a truncated or
missing file), warning with what was wrong.
"""
import logging
import os

import jax
import orbax.checkpoint as ocp


# Replica-parallel saving splits every replicated array across its replicas, compiling a
# jit(slice) per array shape (~50 ms each on CPU, over 100 per run for a small model). Only
# arrays large enough to gain from parallel writes are split.
ocp.type_handlers.register_type_handler(
    jax.Array, ocp.type_handlers.ArrayHandler(min_slice_bytes_for_replica_parallel=64 << 20),
    override=True)


class CheckpointError(RuntimeError):
  """No usable checkpoint, or a checkpoint could not be written."""


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` saving {'state': pytree, 'meta': json}."""

  def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'meta'))

  def steps(self) -> list:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, meta: dict, force: bool = True):
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)
    except OSError as e:
      raise CheckpointError(f'could not write the checkpoint of step {step} to {self.directory}: '
                            f'{e}. Earlier checkpoints are left as they were.') from e

  def wait(self):
    self.manager.wait_until_finished()

  def restore(self, abstract_state):
    """Returns (step, state, meta) of the newest readable checkpoint, or None if there is none."""
    steps = self.steps()
    for i, step in enumerate(reversed(steps)):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        if i:
          logging.warning('Resumed from step %d: newer checkpoints could not be read.', step)
        return step, restored['state'], dict(restored['meta'])
      except Exception as e:  # pylint: disable=broad-except  # any unreadable file: try older
        msg = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
        logging.warning('Checkpoint of step %d in %s is unusable (%s); trying an older one.',
                        step, self.directory, msg[:300])
        print(f'warning: checkpoint step {step} in {self.directory} is unusable ({msg[:300]}); '
              'trying an older one.', flush=True)
    if steps:
      raise CheckpointError(f'none of the checkpoints {steps} in {self.directory} could be read; '
                            'move the directory away to start from scratch.')
    return None

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def abstract(tree):
  """Shape/dtype/sharding skeleton of a pytree of jax.Arrays, the restore target."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
