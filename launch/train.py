"""Trains a model of any family from a config file; rerunning the same command resumes.

  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/quickstart
  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/q --config.model.depth=8
  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/q1 --config.model.name=onetrans
  python launch/train.py --config=configs/multiscenario/synthetic.py --workdir=/tmp/ms
  python launch/train.py --config=configs/genrec/beauty_tiger_rqvae.py:cpu --workdir=/tmp/tiger

`config.family` ('ctr', 'multiscenario', 'genrec') picks the family (deres_jax/train/family.py);
the loop is the same for all (deres_jax/train/trainer.py). `--config.model.*` flags are applied
after the config file, name first: switching the model switches `config.model` to that model's
own fields (README "Model zoo"). Exit codes: 0 done, 2 a clear error (one line), 143 preempted
(a checkpoint was saved: run the same command again).
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from deres_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and summary.')
_MULTIHOST = flags.DEFINE_enum(
    'multihost', 'auto', ['auto', 'on', 'off'],
    'Call jax.distributed.initialize: auto = when the flags below are given or a SLURM, '
    'Cloud TPU or Open MPI multi-process job is detected.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', '', 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', 0, 'Processes in the job (0 = detect).')
_PROCESS_ID = flags.DEFINE_integer('process_id', -1, 'This process (-1 = detect).')
_ALLOW_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False,
    'Resume even though the config differs from WORKDIR/config.json in model, data or '
    'optimiser fields (docs/reliability.md).')
flags.mark_flags_as_required(['config', 'workdir'])


_MODEL_FLAGS = []  # (field, text) pairs of --config.model.* flags, see config.split_model_flags


def main(argv):
  cli.started()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so that flag errors (a mistyped --config.key) come before JAX starts.
  import jax  # pylint: disable=g-import-not-at-top
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import data  # pylint: disable=g-import-not-at-top
  from deres_jax.train import checkpoint, distributed, trainer  # pylint: disable=g-import-not-at-top
  from deres_jax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.train import family as family_lib  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  try:
    family = family_lib.get(_CONFIG.value)
    config = family.apply_overrides(_CONFIG.value, _MODEL_FLAGS)
  except config_lib.ConfigError as e:
    print(f'error: bad --config.model override: {e}', file=sys.stderr)
    sys.exit(2)
  # Before anything touches devices: in a multi-process job every process must join first.
  distributed.initialize(_MULTIHOST.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  try:
    family.validate(config)
    dataset = family.load(config)
    summary = trainer.train_and_evaluate(config, _WORKDIR.value, dataset=dataset,
                                         allow_config_change=_ALLOW_CHANGE.value)
    summary = family.after_training(config, _WORKDIR.value, summary, dataset=dataset)
  except (config_lib.ConfigError, data.DataMissingError, checkpoint.CheckpointError,
          trainer.NonFiniteError, workdir_lib.WorkdirBusyError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except trainer.Preempted as e:
    sys.exit(e.code)
  if jax.process_index() == 0:
    family.report(summary)


if __name__ == '__main__':
  cli.run(main, _MODEL_FLAGS)
