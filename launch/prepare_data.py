"""Prepares Criteo, Avazu or your own CSV/TSV/Parquet for training (docs/data.md).

  python launch/prepare_data.py criteo --manual_dir=~/dac --data_dir=/data/criteo_x4
  python launch/prepare_data.py avazu --manual_dir=~/avazu --data_dir=/data/avazu_x4
  python launch/prepare_data.py csv --config=configs/byo_csv.py --data_dir=/data/mine
  # Amazon 5-core Beauty/Sports/Toys as CTR data with histories (DIN protocol, data/amazon_ctr.py):
  python launch/prepare_data.py amazon --category=beauty --data_dir=/data/amazon_beauty
  # your own split: separate files (the BARS x4 layout), or by time (earliest rows train):
  python launch/prepare_data.py csv --config=configs/byo_csv.py --data_dir=/data/mine \
      --train_files=train.csv --val_files=valid.csv --test_files=test.csv
  python launch/prepare_data.py avazu --manual_dir=~/avazu --data_dir=/data/avazu_time \
      --split=time:hour --fractions=0.8,0.1,0.1
  # any of these with --tfds: also the TFDS ArrayRecord copy in DATA_DIR/tfds (sequence fields included)
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
_TRAIN_FILES = flags.DEFINE_list('train_files', None, 'Split by file: the training files '
                                 '(csv: default config.data.csv_files).')
_VAL_FILES = flags.DEFINE_list('val_files', None, 'Split by file: the validation files '
                               '(csv: default config.data.csv_val_files).')
_TEST_FILES = flags.DEFINE_list('test_files', None, 'Split by file: the test files '
                                '(csv: default config.data.csv_test_files).')
_SPLIT = flags.DEFINE_string('split', None, "'random' (hash of seed, file, line) or 'time:<column>' "
                             '(earliest rows train, then val, test). Default: config.data.split_by.')
_FRACTIONS = flags.DEFINE_list('fractions', None, 'train,val,test fractions of the random or time '
                               'split, e.g. 0.8,0.1,0.1. Default: config.data.split.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Output: the prepared directory '
                                '(config.data.path); the TFDS copy goes to DATA_DIR/tfds.')
_MIN_COUNT = flags.DEFINE_integer('min_count', None, 'Default: Criteo 10, Avazu 2, csv config.')
_SPLIT_SEED = flags.DEFINE_integer('split_seed', None, 'Default: config.data.split_seed (2018).')
_KEEP_DENSE = flags.DEFINE_bool('keep_dense', False, 'Criteo: also keep raw I1..I13 as dense.')
_STRICT = flags.DEFINE_bool('strict', False, 'Stop at the first bad row.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an existing DATA_DIR.')
_TFDS = flags.DEFINE_bool('tfds', False, 'Also write the TFDS ArrayRecord copy to DATA_DIR/tfds '
                          '(any dataset, sequence fields included; one record per row; slower '
                          'than the preparation itself).')
_CATEGORY = flags.DEFINE_enum('category', 'beauty', ['beauty', 'sports', 'toys'],
                              'amazon: which 5-core category (--manual_dir: the S3-Rec files, '
                              'default ../shared/data/amazon/s3rec).')
_SCORE_WITH = flags.DEFINE_string('score_with', '', 'Reuse the vocabularies of this prepared '
                                  'directory; all rows go to one split "all".')


def _write_tfds(name: str, out: str):
  """--tfds: the TFDS ArrayRecord copy of the prepared directory `out`, in `out`/tfds."""
  if _TFDS.value:
    from deres_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top
    builder = tfds_builders.build(name, out, os.path.join(out, 'tfds'))
    print(f'TFDS ArrayRecord copy: {builder.data_dir}')


def main(argv):
  # Imported here so that flag errors come first.
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.data import avazu, bad_input, criteo, csv_source, preprocess  # pylint: disable=g-import-not-at-top
  if len(argv) != 2 or argv[1] not in ('criteo', 'avazu', 'csv', 'amazon'):
    raise app.UsageError('name one dataset: criteo | avazu | csv | amazon')
  name = argv[1]
  if not _DATA_DIR.value:
    raise app.UsageError('--data_dir (the output directory) is required')
  if name == 'amazon':
    from deres_jax.data import amazon_ctr  # pylint: disable=g-import-not-at-top
    out = os.path.abspath(os.path.expanduser(_DATA_DIR.value))
    try:
      amazon_ctr.prepare(_CATEGORY.value, out, os.path.expanduser(_MANUAL_DIR.value or amazon_ctr.DEFAULT_DIR),
                         seed=_SPLIT_SEED.value or 0, overwrite=_OVERWRITE.value)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
    _write_tfds(name, out)
    print(f'Train with: python launch/train.py --config=configs/amazon_{_CATEGORY.value}.py '
          f'--workdir=/tmp/amazon_{_CATEGORY.value} --config.data.path={out}')
    return
  data = (_CONFIG.value or config_lib.base_config()).data
  if _FILES.value and _TRAIN_FILES.value:
    raise app.UsageError('give --files (one input, split by --split) or --train_files (split by file), not both')
  split_by = data.split_by if _SPLIT.value is None else _SPLIT.value
  split_by = '' if split_by == 'random' else split_by
  fractions = tuple(float(x) for x in _FRACTIONS.value) if _FRACTIONS.value else tuple(data.split)
  if len(fractions) != 3 or min(fractions) < 0 or not sum(fractions):
    raise app.UsageError(f'--fractions needs three non-negative train,val,test fractions, got {fractions}')
  spec = None
  if name == 'csv':
    if _CONFIG.value is None:
      raise app.UsageError('csv needs --config=<a config with config.data.csv_*>')
    files = _TRAIN_FILES.value or _FILES.value or list(data.csv_files)
    data.csv_files = tuple(files)  # the column names come from the header of the first one
    val, test = _VAL_FILES.value or list(data.csv_val_files), _TEST_FILES.value or list(data.csv_test_files)
    min_count = data.min_count
  else:
    module = {'criteo': criteo, 'avazu': avazu}[name]
    spec = criteo.spec(keep_dense=_KEEP_DENSE.value) if name == 'criteo' else avazu.spec()
    min_count = module.MIN_COUNT
    files = _TRAIN_FILES.value or _FILES.value
    val, test = _VAL_FILES.value or [], _TEST_FILES.value or []
    if (val or test) and not _TRAIN_FILES.value:
      raise app.UsageError('--val_files/--test_files need --train_files (the training files)')
    if not files:
      if not _MANUAL_DIR.value:
        raise app.UsageError(f'--manual_dir or --files is required.\n{module.MANUAL_DOWNLOAD_INSTRUCTIONS}')
      manual = os.path.expanduser(_MANUAL_DIR.value)
      files = [os.path.join(manual, f) for f in module.FILES if os.path.isfile(os.path.join(manual, f))][:1]
      if not files:
        print(f'error: none of {list(module.FILES)} is in {manual}.\n'
              f'{module.MANUAL_DOWNLOAD_INSTRUCTIONS}', file=sys.stderr)
        sys.exit(2)
  if val or test:  # split by file: every row of a file lands in that file's split
    if split_by:
      raise app.UsageError(f'split by files (--val_files/--test_files) or by --split={split_by}, not both')
    files = {'train': files, 'val': val, 'test': test}
  options = preprocess.Options(
      min_count=_MIN_COUNT.value if _MIN_COUNT.value is not None else min_count,
      split=fractions, split_by=split_by,
      seed=_SPLIT_SEED.value if _SPLIT_SEED.value is not None else data.split_seed,
      strict=_STRICT.value or data.strict)
  out = os.path.abspath(os.path.expanduser(_DATA_DIR.value))
  try:
    spec = spec or csv_source.spec_from_config(data)
    preprocess.prepare(spec, files, out, options, overwrite=_OVERWRITE.value,
                       vocab_from=_SCORE_WITH.value)
  except (bad_input.BadInputError, FileExistsError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if _SCORE_WITH.value:  # one split 'all': no TFDS copy
    print(f'Scored rows (split "all", ids of {_SCORE_WITH.value}): {out}/all/*.npy')
    return
  _write_tfds(name, out)
  # The config the user passed (with its ':arg' if any); criteo/avazu default to their own.
  config_file = flags.FLAGS['config'].config_filename if _CONFIG.value is not None else f'configs/{name}.py'
  print(f'Train with: python launch/train.py --config={config_file} '
        f'--workdir=/tmp/{name}_run --config.data.path={out}')


if __name__ == '__main__':
  app.run(main)
