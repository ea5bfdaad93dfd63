"""Exports a trained model for serving: jax.export StableHLO (any batch size), vocabularies, manifest.

  python launch/export.py --workdir=/tmp/quickstart --out=/tmp/quickstart_model
  python -c "from deres_jax import serving; print(serving.load('/tmp/quickstart_model').info)"
  python launch/export.py --workdir=/tmp/g_tiger --out=/tmp/tiger_model --beam_sizes=10,50
  python -c "from deres_jax import serving; print(serving.load('/tmp/tiger_model').recommend([[5, 17, 3]], k=10))"

docs/serving.md describes the directory; `deres_jax.serving.load` scores with it without the
training code or the config.
"""
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir to export.')
_OUT = flags.DEFINE_string('out', None, 'Model directory to write.')
_PLATFORMS = flags.DEFINE_list('platforms', ['cpu', 'cuda', 'tpu'], 'Platforms to lower for.')
_BEAMS = flags.DEFINE_list('beam_sizes', None, 'Generative retrieval: the beam sizes (TIGER, COBRA) or top-K '
                           'sizes (SASRec) to export, one function each (default: the run\'s eval.beam_size).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing --out.')
flags.mark_flags_as_required(['workdir', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint it opens at INFO
  from deres_jax.serving import export, from_workdir  # pylint: disable=g-import-not-at-top
  from deres_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  try:
    config = from_workdir.read_config(_WORKDIR.value)
    if config.get('family') == 'genrec':
      from deres_jax.serving import genrec_export  # pylint: disable=g-import-not-at-top
      beams = [int(b) for b in _BEAMS.value] if _BEAMS.value else None
      manifest = genrec_export.export(_WORKDIR.value, _OUT.value, tuple(_PLATFORMS.value), beams, _OVERWRITE.value)
      print(f"exported {manifest['model']} (step {manifest['step']}, {manifest['num_items']} items, beam sizes "
            f"{manifest['beam_sizes']}) for {', '.join(manifest['platforms'])} to {_OUT.value}")
      return
    if config.get('family') == 'multiscenario':
      from deres_jax.serving import multiscenario_export  # pylint: disable=g-import-not-at-top
      manifest = multiscenario_export.export(_WORKDIR.value, _OUT.value, tuple(_PLATFORMS.value), _OVERWRITE.value)
      print(f"exported {manifest['model']} (step {manifest['step']}, scenarios {manifest['scenario_names']}) "
            f"for {', '.join(manifest['platforms'])} to {_OUT.value}")
      return
    manifest = export.export(_WORKDIR.value, _OUT.value, tuple(_PLATFORMS.value), _OVERWRITE.value)
  except (from_workdir.WorkdirError, checkpoint.CheckpointError, FileExistsError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  metrics = ', '.join(f'{k} {v:.5f}' for k, v in manifest['metrics'].items()
                      if k in ('test_auc', 'test_logloss'))
  print(f"exported {manifest['model']} (step {manifest['step']}{', ' + metrics if metrics else ''}) "
        f"for {', '.join(manifest['platforms'])} to {_OUT.value}")


if __name__ == '__main__':
  app.run(main)
