"""Trains a generative-retrieval system (tokenizer + retriever, or SASRec); rerunning resumes.

  python launch/train_genrec.py --config=configs/genrec/beauty_sasrec.py:cpu --workdir=/tmp/g_sasrec
  python launch/train_genrec.py --config=configs/genrec/beauty_tiger_rqvae.py:cpu --workdir=/tmp/g_tiger
  python launch/train_genrec.py --config=configs/genrec/beauty_tiger_rqkmeans.py:cpu --workdir=/tmp/g_rqk

Stages (deres_jax/genrec/train.py): a tokenizer found in WORKDIR/tokenizer/ is loaded, not
refitted; the retriever resumes from its newest checkpoint. Writes WORKDIR/summary.json.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Genrec configuration file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the tokenizer, checkpoints, metrics and summary.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so that flag errors come before JAX starts.
  from deres_jax.genrec import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.genrec import train  # pylint: disable=g-import-not-at-top
  from deres_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  try:
    config_lib.validate(_CONFIG.value)
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FileNotFoundError, FloatingPointError, checkpoint.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
