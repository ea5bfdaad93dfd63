"""Trains a model from a config file; rerunning the same command resumes.

  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/quickstart
  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/q --config.model.depth=8
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training configuration file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and summary.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so that flag errors (a mistyped --config.key) come before JAX starts.
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import data  # pylint: disable=g-import-not-at-top
  from deres_jax.train import checkpoint, trainer  # pylint: disable=g-import-not-at-top
  from deres_jax.train import report  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  config = _CONFIG.value
  try:
    config_lib.validate(config)
    dataset = data.load(config.data)
    summary = trainer.train_and_evaluate(config, _WORKDIR.value, dataset=dataset)
    if config.baseline.logreg:
      summary = report.add_logreg_baseline(config, _WORKDIR.value, summary, dataset=dataset)
  except (config_lib.ConfigError, data.DataMissingError, checkpoint.CheckpointError,
          trainer.NonFiniteError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except trainer.Preempted as e:
    sys.exit(e.code)
  report.print_summary(summary)


if __name__ == '__main__':
  app.run(main)
