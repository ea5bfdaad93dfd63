"""Preparation of Criteo/Avazu/CSV samples: bucketing, vocabularies, split, OOV, atomic output."""
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deres_jax.data import avazu, criteo, csv_source, delimited, prepared, preprocess
from deres_jax.data import rows as rows_lib
from deres_jax.config import base_config

DATA = os.path.join(os.path.dirname(__file__), 'data')
TRAIN = os.path.join(DATA, 'paddlerec_criteo_raw_train_sample.txt')
TEST = os.path.join(DATA, 'paddlerec_criteo_raw_test_sample.txt')
AVAZU = os.path.join(DATA, 'deepctr_avazu_sample.txt')


def parse_file(spec, path):
  with open(path, 'rb') as f:
    data = f.read()
  chunk = delimited.Chunk(data if data.endswith(b'\n') else data + b'\n', 1, spec.sep)
  from deres_jax.data.bad_input import BadInput
  bad = BadInput()
  return rows_lib.parse_chunk(spec, chunk, path, bad), bad


def test_criteo_bucketing_matches_hand_computed_values():
  # Line 1 of the PaddleRec test sample: label 0, I1..I13 = 1 1 26 30 0 4 2 37 152 1 2 '' 2.
  p, bad = parse_file(criteo.spec(), TEST)
  assert bad.total == 0 and len(p.label) == 100
  # floor(ln(v)^2) for v > 2 by hand: ln 26 = 3.258 -> 10.6; ln 30 = 3.401 -> 11.6;
  # ln 4 = 1.386 -> 1.92; ln 37 = 3.611 -> 13.04; ln 152 = 5.024 -> 25.2. v <= 2 stays v.
  expected = [1, 1, 10, 11, 0, 1, 2, 13, 25, 1, 2, rows_lib.MISSING_INT, 2]
  assert p.keys[0, :13].tolist() == expected
  for v in (3, 7, 100, 10**6):  # and the rule itself against math.log
    assert rows_lib.bucketize(np.array([float(v)]), np.array([False]))[0] == math.floor(math.log(v) ** 2)
  assert rows_lib.bucketize(np.array([-1.0, 2.0]), np.array([False, False])).tolist() == [-1, 2]


def test_short_paddlerec_rows_are_valid_and_padded_as_missing():
  p, bad = parse_file(criteo.spec(), TEST)
  with open(TEST, 'rb') as f:
    lines = f.read().split(b'\n')
  n_fields = np.array([len(l.split(b'\t')) for l in lines])
  assert sorted(set(n_fields)) == [37, 38, 40] and bad.total == 0
  short = np.flatnonzero(n_fields < 40)
  # The stripped trailing categorical fields are missing (key 0), the others are not all missing.
  for r in short:
    assert (p.keys[r, 13 + n_fields[r] - 14:] == 0).all()
    c = lines[r].split(b'\t')[14:]
    assert [delimited.key_of_string(s) for s in c] == p.keys[r, 13:13 + len(c)].tolist()


def test_avazu_drops_id_and_expands_hour():
  p, bad = parse_file(avazu.spec(), AVAZU)
  assert bad.total == 0 and len(p.label) == 100  # header skipped
  spec = avazu.spec()
  assert spec.cat_names[:3] == ('hour', 'weekday', 'weekend') and 'id' not in spec.cat_names
  assert len(spec.cat_names) == 24
  # 14102100 = 2014-10-21 (a Tuesday: weekday 1, not weekend), hour 00.
  assert p.keys[0, :3].tolist() == [0, 1, 0]
  hours = np.array([int(l.split(b',')[2]) % 100 for l in open(AVAZU, 'rb').read().split(b'\n')[1:] if l])
  assert (p.keys[:, 0] == hours).all()
  keys, ok = rows_lib.hour_keys(np.array([14102500.0, 14103023.0, 14023100.0]), np.zeros(3, bool))
  assert keys[:, 1].tolist()[:2] == [5, 3] and keys[0, 2] == 1 and ok.tolist() == [True, True, False]


def test_vocab_threshold_oov_and_ids_by_frequency(tmp_path):
  # A 2-column CSV: 'a' x5, 'b' x3, 'c' x1 in train; every row in train (split 1, 0, 0).
  rows = ['label,f'] + [f'{i % 2},{v}' for i, v in enumerate('aaaaabbbc')]
  src = tmp_path / 'x.csv'
  src.write_text('\n'.join(rows) + '\n')
  spec = rows_lib.RowSpec(name='csv', columns=('label', 'f'), label='label', categorical=('f',),
                            sep=',', header=True)
  out = tmp_path / 'out'
  preprocess.prepare(spec, [str(src)], str(out), preprocess.Options(min_count=3, split=(1, 0, 0)),
                     log=lambda *a: None)
  schema, splits, _ = prepared.load_splits(str(out))
  assert schema.vocab_sizes == (3,)  # OOV + a + b; c (1 < 3) is OOV
  assert splits['train']['cat'][:, 0].tolist() == [1] * 5 + [2] * 3 + [0]
  # Scoring new rows with the stored vocabulary: unseen 'z' and rare 'c' are OOV.
  new = tmp_path / 'new.csv'
  new.write_text('label,f\n1,b\n0,z\n1,c\n0,a\n')
  preprocess.prepare(spec, [str(new)], str(tmp_path / 'scored'), vocab_from=str(out), log=lambda *a: None)
  _, scored, _ = prepared.load_splits(str(tmp_path / 'scored'), splits=('all',))
  assert scored['all']['cat'][:, 0].tolist() == [2, 0, 0, 1]


def test_split_is_deterministic_chunk_independent_and_8_1_1(tmp_path):
  lines = open(TRAIN, 'rb').read().rstrip(b'\n').split(b'\n') * 30  # 3000 rows
  src = tmp_path / 'big.txt'
  src.write_bytes(b'\n'.join(lines) + b'\n')
  kw = dict(log=lambda *a: None)
  a = preprocess.prepare(criteo.spec(), [str(src)], str(tmp_path / 'a'), preprocess.Options(min_count=2), **kw)
  b = preprocess.prepare(criteo.spec(), [str(src)], str(tmp_path / 'b'),
                         preprocess.Options(min_count=2, chunk_bytes=10_000), **kw)
  c = preprocess.prepare(criteo.spec(), [str(src)], str(tmp_path / 'c'),
                         preprocess.Options(min_count=2, seed=7), **kw)
  assert a['rows'] == b['rows'] and a['rows'] != c['rows']
  assert sum(a['rows'].values()) == 3000
  assert abs(a['rows']['train'] / 3000 - 0.8) < 0.03 and abs(a['rows']['val'] / 3000 - 0.1) < 0.02
  for split in ('train', 'val', 'test'):
    for col in ('label', 'cat'):
      x, y = (np.load(tmp_path / d / split / f'{col}.npy') for d in 'ab')
      np.testing.assert_array_equal(x, y)


def test_vocab_counts_from_train_only(tmp_path):
  out = tmp_path / 'p'
  preprocess.prepare(criteo.spec(), [TRAIN, TEST], str(out), preprocess.Options(min_count=2),
                     log=lambda *a: None)
  vocab, _ = preprocess.load_vocab(str(out))
  p1, _ = parse_file(criteo.spec(), TRAIN)
  p2, _ = parse_file(criteo.spec(), TEST)
  split = np.concatenate([preprocess.assign_split(2018, 0, p1.line, (0.8, 0.1, 0.1)),
                          preprocess.assign_split(2018, 1, p2.line, (0.8, 0.1, 0.1))])
  keys = np.concatenate([p1.keys, p2.keys])[split == 0]
  for f, name in enumerate(criteo.spec().cat_names):  # brute force recount
    u, c = np.unique(keys[:, f], return_counts=True)
    assert set(vocab[name][0].tolist()) == set(u[c >= 2].tolist())
    assert (np.diff(vocab[name][1]) <= 0).all()  # most frequent first
  _, splits, _ = prepared.load_splits(str(out))
  assert sum(len(s['label']) for s in splits.values()) == 200
  assert 'dense' not in splits['train'] and splits['train']['cat'].shape[1] == 39


def test_keep_dense_keeps_raw_integers(tmp_path):
  preprocess.prepare(criteo.spec(keep_dense=True), [TEST], str(tmp_path / 'p'),
                     preprocess.Options(min_count=1, split=(1, 0, 0)), log=lambda *a: None)
  _, splits, _ = prepared.load_splits(str(tmp_path / 'p'))
  d = splits['train']['dense']
  assert d.shape == (100, 13) and d[0, 2] == 26 and np.isnan(d[0, 11])


def test_failure_midway_leaves_no_complete_looking_output(tmp_path, monkeypatch):
  def boom(*a):
    raise RuntimeError('disk full')
  monkeypatch.setattr(preprocess, 'encode', boom)
  with pytest.raises(RuntimeError):
    preprocess.prepare(criteo.spec(), [TRAIN], str(tmp_path / 'p'), log=lambda *a: None)
  assert os.listdir(tmp_path) == []  # neither the output nor its temporary directory
  assert not prepared.is_complete(str(tmp_path / 'p'))


def test_existing_output_is_not_overwritten_silently(tmp_path):
  out = str(tmp_path / 'p')
  preprocess.prepare(criteo.spec(), [TRAIN], out, log=lambda *a: None)
  with pytest.raises(FileExistsError):
    preprocess.prepare(criteo.spec(), [TRAIN], out, log=lambda *a: None)
  preprocess.prepare(criteo.spec(), [TRAIN], out, overwrite=True, log=lambda *a: None)
  assert json.load(open(os.path.join(out, 'COMPLETE')))['rows']['train'] > 0


def _byo_config(files, **kw):
  c = base_config()
  c.data.name = 'csv'
  c.data.csv_files = tuple(files)
  c.data.csv_label = 'click'
  c.data.csv_dense = ('price',)
  c.data.csv_categorical = ('user', 'item')
  c.data.csv_scenario = 'page'
  c.data.min_count = 1
  for k, v in kw.items():
    c.data[k] = v
  return c


def _byo_table(n=300, seed=0):
  rng = np.random.default_rng(seed)
  users = [f'user_{i}_with_a_long_name' for i in range(20)]  # > 8 bytes: the long-key path
  return pa.table({
      'click': rng.integers(0, 2, n),
      'price': np.round(rng.normal(10, 5, n), 2),
      'user': [users[i] for i in rng.integers(0, 20, n)],
      'item': [f'i{i}' for i in rng.integers(0, 50, n)],
      'page': [['home', 'search', 'cart'][i] for i in rng.integers(0, 3, n)],
  })


def test_byo_csv_and_parquet_round_trip(tmp_path):
  table = _byo_table()
  src = tmp_path / 'mine.csv'
  import pyarrow.csv as pa_csv
  pa_csv.write_csv(table, str(src), pa_csv.WriteOptions(quoting_style='none'))
  pq.write_table(table, str(tmp_path / 'mine.parquet'))
  outs = {}
  for ext in ('csv', 'parquet'):
    config = _byo_config([str(tmp_path / f'mine.{ext}')])
    spec = csv_source.spec_from_config(config.data)
    assert spec.columns == ('click', 'price', 'user', 'item', 'page')
    out = str(tmp_path / f'out_{ext}')
    preprocess.prepare(spec, list(config.data.csv_files), out,
                       preprocess.Options(min_count=1, split=(1, 0, 0)), log=lambda *a: None)
    outs[ext] = prepared.load_splits(out)
  schema, splits, _ = outs['csv']
  s = splits['train']
  np.testing.assert_array_equal(s['label'], table['click'].to_numpy())
  np.testing.assert_allclose(s['dense'][:, 0], table['price'].to_numpy(), rtol=1e-6)
  # The same string always gets the same id, different strings different ids.
  for f, col in enumerate(('user', 'item')):
    values = np.array(table[col].to_pylist())
    ids = s['cat'][:, f]
    assert len(set(zip(values, ids))) == len(set(values)) == len(set(ids)) and (ids > 0).all()
  assert schema.num_scenarios == 4 and set(s['scenario']) == {1, 2, 3}
  # Parquet gives exactly the same prepared arrays.
  for col in s:
    np.testing.assert_array_equal(s[col], outs['parquet'][1]['train'][col])
