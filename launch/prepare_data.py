"""Prepares Criteo, Avazu or your own CSV/TSV/Parquet for training (docs/data.md).

  python launch/prepare_data.py criteo --manual_dir=~/dac --data_dir=/data/criteo_x4
  python launch/prepare_data.py avazu --manual_dir=~/avazu --data_dir=/data/avazu_x4
  python launch/prepare_data.py csv --config=configs/byo_csv.py --data_dir=/data/mine
  # score new rows with the vocabularies of an existing preparation (one split 'all'):
  python launch/prepare_data.py criteo --files=new.txt --score_with=/data/criteo_x4 --data_dir=/data/new

Then train with --config.data.path=<data_dir>. Bad rows are counted and skipped with a
summary (--strict stops at the first); the output appears only once complete.
"""
import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (needed for csv).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Directory holding the Kaggle download.')
_FILES = flags.DEFINE_list('files', None, 'Input files (instead of --manual_dir).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Output: the prepared directory '
                                '(config.data.path); the TFDS copy goes to DATA_DIR/tfds.')
_MIN_COUNT = flags.DEFINE_integer('min_count', None, 'Default: Criteo 10, Avazu 2, csv config.')
_SPLIT_SEED = flags.DEFINE_integer('split_seed', None, 'Default: config.data.split_seed (2018).')
_KEEP_DENSE = flags.DEFINE_bool('keep_dense', False, 'Criteo: also keep raw I1..I13 as dense.')
_STRICT = flags.DEFINE_bool('strict', False, 'Stop at the first bad row.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing DATA_DIR.')
_TFDS = flags.DEFINE_bool('tfds', False, 'Also write the TFDS ArrayRecord copy to DATA_DIR/tfds '
                          '(one record per row; slower than the preparation itself).')
_SCORE_WITH = flags.DEFINE_string('score_with', '', 'Reuse the vocabularies of this prepared '
                                  'directory; all rows go to one split "all".')


def main(argv):
  # Imported here so that flag errors come first.
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.data import avazu, bad_input, criteo, csv_source, preprocess  # pylint: disable=g-import-not-at-top
  if len(argv) != 2 or argv[1] not in ('criteo', 'avazu', 'csv'):
    raise app.UsageError('name one dataset: criteo | avazu | csv')
  name = argv[1]
  if not _DATA_DIR.value:
    raise app.UsageError('--data_dir (the output directory) is required')
  data = (_CONFIG.value or config_lib.base_config()).data
  if name == 'csv':
    if _CONFIG.value is None:
      raise app.UsageError('csv needs --config=<a config with config.data.csv_*>')
    spec, min_count = csv_source.spec_from_config(data), data.min_count
    files = _FILES.value or list(data.csv_files)
  else:
    module = {'criteo': criteo, 'avazu': avazu}[name]
    spec = criteo.spec(keep_dense=_KEEP_DENSE.value) if name == 'criteo' else avazu.spec()
    min_count = module.MIN_COUNT
    files = _FILES.value
    if not files:
      if not _MANUAL_DIR.value:
        raise app.UsageError(f'--manual_dir or --files is required.\n{module.MANUAL_DOWNLOAD_INSTRUCTIONS}')
      manual = os.path.expanduser(_MANUAL_DIR.value)
      files = [os.path.join(manual, f) for f in module.FILES if os.path.isfile(os.path.join(manual, f))][:1]
      if not files:
        print(f'error: none of {list(module.FILES)} is in {manual}.\n'
              f'{module.MANUAL_DOWNLOAD_INSTRUCTIONS}', file=sys.stderr)
        sys.exit(2)
  options = preprocess.Options(
      min_count=_MIN_COUNT.value if _MIN_COUNT.value is not None else min_count,
      split=tuple(data.split),
      seed=_SPLIT_SEED.value if _SPLIT_SEED.value is not None else data.split_seed,
      strict=_STRICT.value or data.strict)
  out = os.path.abspath(os.path.expanduser(_DATA_DIR.value))
  try:
    preprocess.prepare(spec, files, out, options, overwrite=_OVERWRITE.value,
                       vocab_from=_SCORE_WITH.value)
  except (bad_input.BadInputError, FileExistsError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if _TFDS.value and name != 'csv' and not _SCORE_WITH.value:
    from deres_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top
    builder = tfds_builders.build(name, out, os.path.join(out, 'tfds'))
    print(f'TFDS ArrayRecord copy: {builder.data_dir}')
  if _SCORE_WITH.value:
    print(f'Scored rows (split "all", ids of {_SCORE_WITH.value}): {out}/all/*.npy')
    return
  print(f'Train with: python launch/train.py --config=configs/{name if name != "csv" else "byo_csv"}.py '
        f'--workdir=/tmp/{name}_run --config.data.path={out}')


if __name__ == '__main__':
  app.run(main)
