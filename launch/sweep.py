"""Grid or random search over config fields; rerunning the same command resumes (docs/sweep.md).

  python launch/sweep.py --config=configs/quickstart.py --workdir=/tmp/sweep \
      --sweep.optim.learning_rate=1e-3,2e-3 --sweep.model.width=32,64
  python launch/sweep.py --config=configs/quickstart.py --workdir=/tmp/sweep_models \
      --sweep.model.name=dcnv2,transformer --config.train.num_steps=300
  python launch/sweep.py --config=configs/quickstart.py --workdir=/tmp/sweep_heads \
      --sweep.model.head_hidden='(256,)','(512,256)' --sweep.optim.learning_rate=1e-3,2e-3,4e-3 \
      --mode=random --num_trials=4 --seed=0

`--sweep.<field>=v1,v2,...` lists the values of a field (commas inside brackets or quotes do
not split; with a ';' the values are split at ';' only). `--config.*` flags apply to every
trial. Each trial trains in WORKDIR/trial_XXX_<values>; the table of results goes to
WORKDIR/results.md and the best trial's config to WORKDIR/best_config.py.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from deres_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Base configuration file of every trial.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the sweep: sweep.json, results.md, '
                               'best_config.py and one workdir per trial.')
_MODE = flags.DEFINE_enum('mode', 'grid', ['grid', 'random'],
                          'grid: every combination of the --sweep values; random: --num_trials '
                          'distinct combinations drawn with --seed.')
_NUM_TRIALS = flags.DEFINE_integer('num_trials', 0, 'random mode: number of trials.')
_SEED = flags.DEFINE_integer('seed', 0, 'random mode: seed of the draw (not of the training).')
flags.mark_flags_as_required(['config', 'workdir'])


_MODEL_FLAGS = []  # (field, text) pairs of --config.model.* flags, see config.split_model_flags
_AXES = []  # (field, [texts]) of the --sweep.* flags, see train.sweep.split_sweep_flags


def main(argv):
  cli.started()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so that flag errors (a mistyped --config.key) come before JAX starts.
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import data  # pylint: disable=g-import-not-at-top
  from deres_jax.train import checkpoint, sweep, trainer  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  try:
    sweep.run(_CONFIG.value, _WORKDIR.value, _AXES, model_flags=_MODEL_FLAGS, mode=_MODE.value,
              num_trials=_NUM_TRIALS.value, seed=_SEED.value)
  except (config_lib.ConfigError, sweep.SweepError, data.DataMissingError,
          checkpoint.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except trainer.Preempted as e:
    sys.exit(e.code)



if __name__ == '__main__':
  from deres_jax.train.sweep import SweepError, split_sweep_flags  # pylint: disable=g-import-not-at-top
  try:
    argv, _AXES[:] = split_sweep_flags(sys.argv)
  except SweepError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  cli.run(main, _MODEL_FLAGS, argv)
