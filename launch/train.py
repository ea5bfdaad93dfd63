"""Trains a model from a config file; rerunning the same command resumes.

  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/quickstart
  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/q --config.model.depth=8
  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/q1 --config.model.name=onetrans

`--config.model.*` flags are applied after the config file, name first: switching the model
switches `config.model` to that model's own fields (README "Model zoo").
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
  from deres_jax.train import checkpoint, distributed, report, trainer  # pylint: disable=g-import-not-at-top
  from deres_jax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  if _CONFIG.value.get('family') == 'multiscenario':  # configs/multiscenario/: own models and trainer
    from deres_jax.multiscenario import trainer as ms_trainer  # pylint: disable=g-import-not-at-top
    sys.exit(ms_trainer.main(_CONFIG.value, _WORKDIR.value, _MODEL_FLAGS, _ALLOW_CHANGE.value))
  try:
    config = config_lib.apply_model_overrides(_CONFIG.value, _MODEL_FLAGS)
  except config_lib.ConfigError as e:
    print(f'error: bad --config.model override: {e}', file=sys.stderr)
    sys.exit(2)
  # Before anything touches devices: in a multi-process job every process must join first.
  distributed.initialize(_MULTIHOST.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                         _PROCESS_ID.value)
  try:
    config_lib.validate(config)
    dataset = data.load(config.data)
    summary = trainer.train_and_evaluate(config, _WORKDIR.value, dataset=dataset,
                                         allow_config_change=_ALLOW_CHANGE.value)
    if config.baseline.logreg:
      summary = report.add_logreg_baseline(config, _WORKDIR.value, summary, dataset=dataset)
  except (config_lib.ConfigError, data.DataMissingError, checkpoint.CheckpointError,
          trainer.NonFiniteError, workdir_lib.WorkdirBusyError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except trainer.Preempted as e:
    sys.exit(e.code)
  if jax.process_index() == 0:
    report.print_summary(summary)



if __name__ == '__main__':
  cli.run(main, _MODEL_FLAGS)
