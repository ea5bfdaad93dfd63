"""Your own splits: pre-split files and time order (preprocess.prepare, launch/prepare_data.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deres_jax.data import avazu, bad_input, delimited, prepared, preprocess
from deres_jax.data.rows import RowSpec

DATA = os.path.join(os.path.dirname(__file__), 'data')
CRITEO_CSV = os.path.join(DATA, 'deepctr_criteo_sample.txt')  # header label,I1..I13,C1..C26; 200 rows
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(log=lambda *a: None)
CRITEO_SPEC = RowSpec(name='csv', columns=tuple(open(CRITEO_CSV).readline().strip().split(',')),
                      label='label', dense=tuple(f'I{i}' for i in range(1, 14)),
                      categorical=tuple(f'C{i}' for i in range(1, 27)), sep=',', header=True)


def write_criteo_splits(tmp_path):
  """The DeepCTR sample as train (140 rows), valid (30), test (30) files, each with the header.

  C1 of every validation row is 'onlyval1', a value the training file never has.
  """
  header, *lines = open(CRITEO_CSV).read().splitlines()
  parts = {'train': lines[:140], 'val': lines[140:170], 'test': lines[170:]}
  parts['val'] = [','.join(f[:14] + ['onlyval1'] + f[15:]) for f in (l.split(',') for l in parts['val'])]
  paths = {}
  for split, rows in parts.items():
    paths[split] = str(tmp_path / f'{split}.csv')
    with open(paths[split], 'w') as f:
      f.write('\n'.join([header] + rows) + '\n')
  return paths, parts


def test_pre_split_files_keep_their_rows_and_vocab_counts_train_only(tmp_path):
  paths, parts = write_criteo_splits(tmp_path)
  out = str(tmp_path / 'p')
  summary = preprocess.prepare(CRITEO_SPEC, paths, out, preprocess.Options(min_count=2), **QUIET)
  assert summary['rows'] == {'train': 140, 'val': 30, 'test': 30} and summary['bad_total'] == 0
  schema, splits, meta = prepared.load_splits(out)
  # Every row of a file is in that file's split, in file order: I2 (dense column 1) matches.
  for split, rows in parts.items():
    i2 = [float(r.split(',')[2]) if r.split(',')[2] else np.nan for r in rows]
    np.testing.assert_array_equal(splits[split]['dense'][:, 1], np.float32(i2))
  assert meta['split']['mode'] == 'files'
  assert meta['split']['files'] == {s: [os.path.abspath(p)] for s, p in paths.items()}
  # The vocabularies are a brute-force recount of the training file alone (min_count 2).
  vocab, _ = preprocess.load_vocab(out)
  train = [r.split(',') for r in parts['train']]
  for f, name in enumerate(schema.cat_names):
    values, counts = np.unique([r[14 + f] for r in train], return_counts=True)
    expected = {delimited.key_of_string(v.encode()) for v, c in zip(values, counts) if c >= 2}
    assert set(vocab[name][0].tolist()) == expected
  # A category only in the val file is OOV there (30 occurrences in val do not count).
  assert (splits['val']['cat'][:, 0] == 0).all() and (splits['train']['cat'][:, 0] > 0).any()
  # A split may be left out: it is then empty.
  s = preprocess.prepare(CRITEO_SPEC, {'train': paths['train'], 'test': paths['test']},
                         str(tmp_path / 'q'), preprocess.Options(min_count=2), **QUIET)
  assert s['rows'] == {'train': 140, 'val': 0, 'test': 30}


def write_timed_csv(path, times, extra_rows=()):
  """click,ts,n,item rows in a shuffled order; n is each row's rank in time order."""
  rng = np.random.default_rng(0)
  order = np.argsort(times, kind='stable')
  rank = np.empty(len(times), int)
  rank[order] = np.arange(len(times))
  perm = rng.permutation(len(times))
  lines = ['click,ts,n,item'] + [f'{i % 2},{times[i]},{rank[i]},it{rank[i] // 10}' for i in perm]
  with open(path, 'w') as f:
    f.write('\n'.join(lines + list(extra_rows)) + '\n')


TIMED = RowSpec(name='csv', columns=('click', 'ts', 'n', 'item'), label='click', dense=('ts', 'n'),
                categorical=('item',), sep=',', header=True)


def test_time_split_is_in_time_order_with_fractions_and_train_only_vocab(tmp_path):
  # 1000 rows at 250 distinct times (seconds) (ties of 4), shuffled, plus two rows with bad times.
  times = 100_000 + 60 * (np.arange(1000) // 4)  # exact in the float32 dense column
  src = tmp_path / 'log.csv'
  write_timed_csv(src, times, extra_rows=['1,,5,it0', '0,yesterday,6,it0'])
  options = preprocess.Options(min_count=1, split_by='time:ts')
  summary = preprocess.prepare(TIMED, [str(src)], str(tmp_path / 'p'), options, **QUIET)
  _, splits, meta = prepared.load_splits(str(tmp_path / 'p'))
  ts = {s: splits[s]['dense'][:, 0].astype(np.float64) for s in splits}
  assert ts['train'].max() < ts['val'].min() and ts['val'].max() < ts['test'].min()
  assert summary['rows'] == {'train': 800, 'val': 100, 'test': 100}  # 800 and 900 fall between ties
  t1, t2 = meta['split']['thresholds']
  assert meta['split']['mode'] == 'time' and meta['split']['column'] == 'ts'
  assert t1 == ts['train'].max() and t2 == ts['val'].max()
  # The two bad times are counted like other bad input; --strict stops at the first.
  assert summary['bad_rows']['non_numeric']['count'] == 2
  assert 'yesterday' in summary['bad_rows']['non_numeric']['first_reason'] or \
      "ts=''" in summary['bad_rows']['non_numeric']['first_reason']
  with pytest.raises(bad_input.BadInputError, match='line 1002|:1002:'):
    preprocess.prepare(TIMED, [str(src)], str(tmp_path / 's'),
                       preprocess.Options(min_count=1, split_by='time:ts', strict=True), **QUIET)
  # Items of the last 100 rows (it90..it99) never occur in train: OOV (0) in test.
  assert (splits['test']['cat'][:, 0] == 0).all() and (splits['train']['cat'][:, 0] > 0).all()
  # Ties go to the earlier split: 10 rows per time, so 75% and 85% round up to 80% and 90%.
  write_timed_csv(src, 1000 + np.arange(100) // 10)
  s = preprocess.prepare(TIMED, [str(src)], str(tmp_path / 'q'),
                         preprocess.Options(min_count=1, split_by='time:ts', split=(0.75, 0.1, 0.15)), **QUIET)
  assert s['rows'] == {'train': 80, 'val': 10, 'test': 10}  # 75 -> the 80th row's time, 85 -> 90th
  assert s['split']['thresholds'] == [1007, 1008]


def test_time_split_on_iso_dates_and_on_avazu_hours(tmp_path):
  days = np.array([f'2024-03-{d:02d}T{h:02d}:30:00' for d in range(1, 11) for h in (0, 12)])
  src = tmp_path / 'days.csv'
  write_timed_csv(src, np.repeat(days, 5))  # 100 rows, 20 times; ISO strings sort as text too
  spec = RowSpec(name='csv', columns=('click', 'ts', 'n', 'item'), label='click', dense=('n',),
                 categorical=('item',), sep=',', header=True)
  s = preprocess.prepare(spec, [str(src)], str(tmp_path / 'p'),
                         preprocess.Options(min_count=1, split_by='time:ts'), **QUIET)
  _, splits, _ = prepared.load_splits(str(tmp_path / 'p'))
  n = {k: splits[k]['dense'][:, 0] for k in splits}
  assert n['train'].max() < n['val'].min() and n['val'].max() < n['test'].min()
  assert s['rows'] == {'train': 80, 'val': 10, 'test': 10}
  assert s['split']['kind'] == 'iso_date' and s['split']['thresholds'] == ['2024-03-08T12:30:00',
                                                                             '2024-03-09T12:30:00']
  # Avazu: the YYMMDDHH hour column (also a feature) orders the rows; 10 hours of 10 rows.
  lines = open(os.path.join(DATA, 'deepctr_avazu_sample.txt')).read().splitlines()
  for i in range(1, len(lines)):
    f = lines[i].split(',')
    f[2] = f'141021{(i - 1) // 10:02d}'
    lines[i] = ','.join(f)
  (tmp_path / 'avazu.csv').write_text('\n'.join(lines) + '\n')
  s = preprocess.prepare(avazu.spec(), [str(tmp_path / 'avazu.csv')], str(tmp_path / 'a'),
                         preprocess.Options(min_count=2, split_by='time:hour'), **QUIET)
  assert s['rows'] == {'train': 80, 'val': 10, 'test': 10} and s['split']['thresholds'] == [14102107, 14102108]


def test_unknown_split_column_and_differing_columns_give_one_clear_error(tmp_path):
  write_timed_csv(tmp_path / 'a.csv', np.arange(20))
  with pytest.raises(ValueError, match=r"'tstamp' is not a column.*\['click', 'ts', 'n', 'item'\]"):
    preprocess.prepare(TIMED, [str(tmp_path / 'a.csv')], str(tmp_path / 'p'),
                       preprocess.Options(split_by='time:tstamp'), **QUIET)
  with pytest.raises(ValueError, match="use '' .* or 'time:<column>'"):
    preprocess.prepare(TIMED, [str(tmp_path / 'a.csv')], str(tmp_path / 'p'),
                       preprocess.Options(split_by='hour'), **QUIET)
  # Split files with other columns: one message naming each file and what differs.
  (tmp_path / 'b.csv').write_text('click,ts,n,page\n1,1,1,x\n')
  pq.write_table(pa.table({'click': [1], 'ts': [1], 'item': ['x']}), str(tmp_path / 'c.parquet'))
  files = {'train': str(tmp_path / 'a.csv'), 'val': str(tmp_path / 'b.csv'),
           'test': str(tmp_path / 'c.parquet')}
  with pytest.raises(ValueError) as e:
    preprocess.prepare(TIMED, files, str(tmp_path / 'p'), **QUIET)
  msg = str(e.value)
  assert "val " + files['val'] + ": lacks ['item'] and has extra ['page']" in msg
  assert "test " + files['test'] + ": lacks ['n']" in msg and 'a.csv' in msg
  # A missing file: named with its split.
  with pytest.raises(FileNotFoundError, match=r'val .*nothere\.csv'):
    preprocess.prepare(TIMED, {'train': files['train'], 'val': str(tmp_path / 'nothere.csv')},
                       str(tmp_path / 'p'), **QUIET)
  assert sorted(os.listdir(tmp_path)) == ['a.csv', 'b.csv', 'c.parquet']  # no work was done


def test_prepare_data_cli_split_files_and_train_with_names_the_config(tmp_path):
  paths, _ = write_criteo_splits(tmp_path)
  config = tmp_path / 'my_criteo_csv.py'
  config.write_text(
      'from deres_jax.config import base_config\n\n\n'
      'def get_config():\n'
      '  c = base_config()\n'
      "  c.data.name = 'csv'\n"
      "  c.data.csv_dense = tuple(f'I{i}' for i in range(1, 14))\n"
      "  c.data.csv_categorical = tuple(f'C{i}' for i in range(1, 27))\n"
      '  c.data.min_count = 2\n'
      '  return c\n')
  out = tmp_path / 'prepared'
  result = subprocess.run(
      [sys.executable, 'launch/prepare_data.py', 'csv', f'--config={config}', f'--data_dir={out}',
       f'--train_files={paths["train"]}', f'--val_files={paths["val"]}', f'--test_files={paths["test"]}'],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert f'Train with: python launch/train.py --config={config} ' in result.stdout
  assert f'--config.data.path={out}' in result.stdout
  complete = json.load(open(out / 'COMPLETE'))
  assert complete['rows'] == {'train': 140, 'val': 30, 'test': 30}
  assert prepared.read_meta(str(out))['split']['files']['val'] == [paths['val']]
