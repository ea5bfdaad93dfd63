"""Sequence fields (behaviour histories) through export, raw-row encoding, predict.py and the server.

A tiny DIN is trained once for the module (6 steps) on a small raw CSV whose `hist` column
holds the items clicked before (`101|117|103`, sharing `item`'s vocabulary) and whose `tags`
column has a vocabulary of its own, prepared by file so the raw test rows are the prepared
test split row for row; the run is exported once and every test reuses both.
"""
import concurrent.futures
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deres_jax.data import prepared, preprocess
from deres_jax.data.bad_input import BadInputError
from deres_jax.data.rows import RowSpec
from deres_jax.serving import app as serving_app
from deres_jax.serving import export as export_lib
from deres_jax.serving import exported, features, from_workdir, predict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ('label', 'user', 'item', 'price', 'hist', 'tags')
L = 4
SPEC = RowSpec(name='csv', columns=COLUMNS, label='label', dense=('price',), categorical=('user', 'item'),
               sequence=('hist', 'tags'), seq_shared=('item', ''), sep=',', header=True, seq_max_len=L)
TAGS = ('red', 'blue', 'green', 'big', 'small')


def _make_rows(n, seed):
  """Raw rows: clicked (mostly) when the candidate item is among the last items of the history."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(n):
    hist = [int(x) for x in rng.integers(100, 130, rng.integers(0, 8))]  # 0..7 items: some longer than L
    item = int(rng.choice(hist[-L:])) if hist and rng.random() < 0.5 else int(rng.integers(100, 130))
    hit = item in hist[-L:]
    rows.append({'label': int(rng.random() < (0.85 if hit else 0.15)), 'user': f'u{rng.integers(0, 12)}',
                 'item': item, 'price': float(rng.integers(1, 400)) / 4,
                 'hist': '|'.join(map(str, hist)), 'tags': '|'.join(rng.choice(TAGS, rng.integers(0, 4)))})
  return rows


def _write_csv(path, rows, columns=COLUMNS):
  with open(path, 'w') as f:
    f.write(','.join(columns) + '\n')
    for r in rows:
      f.write(','.join('' if r[c] is None else str(r[c]) for c in columns) + '\n')
  return str(path)


def _json_rows(rows, lists=True):
  """The rows as a client sends them: no label; histories as JSON lists of ints (or the CSV text)."""
  out = []
  for r in rows:
    j = {c: r[c] for c in COLUMNS[1:]}
    if lists:
      j['hist'] = [int(x) for x in r['hist'].split('|')] if r['hist'] else []
      j['tags'] = r['tags'].split('|') if r['tags'] else None
    out.append(j)
  return out


def _train_and_export(root, data_dir, model_config, steps=6):
  """(workdir, model_dir) of a short run of `model_config` on the prepared data, exported."""
  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.config import base_config  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.data.name, c.data.path = 'csv', data_dir
  c.model = model_config
  c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.progress = 64, steps, 3, False
  c.eval.batch_size, c.eval.every_steps = 512, steps
  c.ckpt.every_steps = steps
  workdir, model_dir = str(root / f'run_{model_config.name}'), str(root / f'model_{model_config.name}')
  trainer.train_and_evaluate(c, workdir, dataset=data_lib.load(c.data))
  export_lib.export(workdir, model_dir)
  return workdir, model_dir


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(prepared test split, raw test rows, workdir, model_dir, in-process and exported scorers) of a DIN."""
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('serving_seq')
  raw = {'train': _make_rows(600, 0), 'val': _make_rows(100, 1), 'test': _make_rows(120, 2)}
  files = {k: _write_csv(root / f'{k}.csv', v) for k, v in raw.items()}
  data_dir = str(root / 'prepared')
  preprocess.prepare(SPEC, files, data_dir, preprocess.Options(min_count=2), log=lambda *_: None)
  workdir, model_dir = _train_and_export(root, data_dir, models.model_config('din', embed_dim=4, att_hidden=(8,),
                                                                             hidden=(8,)))
  _, splits, _ = prepared.load_splits(data_dir, ('test',))
  return {'test': {k: np.asarray(v) for k, v in splits['test'].items()}, 'raw': raw['test'], 'files': files,
          'root': root, 'data_dir': data_dir, 'workdir': workdir, 'model_dir': model_dir,
          'in_process': from_workdir.from_workdir(workdir), 'exported': exported.load(model_dir)}


def test_exported_on_raw_rows_equals_in_process_on_the_prepared_split(run):
  test, rows = run['test'], _json_rows(run['raw'])
  assert test['seq'].shape == (120, 2, L)
  enc = features.encode_rows(run['exported'].spec, rows)
  # The raw rows (JSON lists, or the CSV text) encode to exactly the prepared split's ids.
  np.testing.assert_array_equal(enc.cat, test['cat'])
  np.testing.assert_array_equal(enc.seq, test['seq'])
  np.testing.assert_array_equal(features.encode_rows(run['exported'].spec, _json_rows(run['raw'], False)).seq,
                                test['seq'])
  p_prepared = run['in_process'].probabilities(test['cat'], test['dense'], test['seq'])
  p_raw = run['exported'].score_rows(rows)
  np.testing.assert_allclose(p_raw, p_prepared, rtol=0, atol=1e-6)
  np.testing.assert_allclose(run['in_process'].score_rows(rows), p_prepared, rtol=0, atol=1e-6)
  assert p_raw.std() > 0
  # The histories count: emptying them changes the scores.
  assert not np.allclose(run['exported'].score_rows([dict(r, hist=[]) for r in rows]), p_raw, atol=1e-6)
  with pytest.raises(ValueError, match='reads the sequence fields'):
    run['exported'].probabilities(test['cat'], test['dense'])
  seqs = {s['name']: s for s in run['exported'].info['sequences']}
  assert seqs['hist'] == {'name': 'hist', 'max_len': L, 'sep': '|', 'padding': 'left', 'pad_id': -1,
                          'shares': 'item', 'vocab': 'item'}
  assert seqs['tags']['shares'] == '' and seqs['tags']['vocab'] == 'tags'
  assert set(np.load(os.path.join(run['model_dir'], 'vocab.npz')).files) == {'user', 'item', 'tags'}


@pytest.mark.parametrize('name', ['transformer', 'onetrans'])
def test_pooled_and_s_token_models_export_like_din(run, name):
  """The default Transformer (pooled histories) and OneTrans (one S-token per position) as well."""
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  cfg = models.model_config(name, embed_dim=4, width=8, num_heads=2, depth=2, ffn_mult=2, num_tokens=3,
                            head_hidden=(8,))
  workdir, model_dir = _train_and_export(run['root'], run['data_dir'], cfg, steps=2)
  test, rows = run['test'], _json_rows(run['raw'])
  want = from_workdir.from_workdir(workdir).probabilities(test['cat'], test['dense'], test['seq'])
  np.testing.assert_allclose(exported.load(model_dir).score_rows(rows), want, rtol=0, atol=1e-6)


def test_truncation_keeps_the_most_recent_ids_and_unknown_ids_are_counted(run):
  spec, scorer = run['exported'].spec, run['exported']
  base = dict(_json_rows(run['raw'][:1])[0], hist=[101, 102, 103, 104], tags=['red', 'blue'])
  longer = dict(base, hist=[125, 126, 127, 101, 102, 103, 104])    # 3 older items before the same last 4
  enc = features.encode_rows(spec, [base, longer, dict(base, hist='101|102|103|104')])
  np.testing.assert_array_equal(enc.seq[1], enc.seq[0])
  np.testing.assert_array_equal(enc.seq[2], enc.seq[0])
  assert (enc.seq[0, 0] > 0).all() and enc.oov.sum() == 0
  np.testing.assert_allclose(scorer.score_rows([longer]), scorer.score_rows([base]), rtol=0, atol=1e-7)
  # Unseen elements get the OOV id 0, counted per field; an empty list or null is all padding.
  odd = [dict(base, hist=[101, 999, 'zz'], tags='red|purple'), dict(base, hist=None, tags=[])]
  enc = features.encode_rows(spec, odd)
  hist, tags = enc.seq[0, 0].tolist(), enc.seq[0, 1].tolist()
  assert hist[0] == -1 and hist[1] > 0 and hist[2:] == [0, 0]            # [pad, 101, OOV, OOV]
  assert tags[:2] == [-1, -1] and tags[2] > 0 and tags[3] == 0           # [pad, pad, red, OOV]
  assert (enc.seq[1] == -1).all()
  assert dict(zip(spec.oov_names, enc.oov.tolist())) == {'user': 0, 'item': 0, 'hist': 2, 'tags': 1}
  # Dropped (older than the cap) unseen ids are not scored, so not counted.
  enc = features.encode_rows(spec, [dict(base, hist=[999, 998, 101, 102, 103, 104])])
  assert enc.oov.sum() == 0


def test_bad_sequence_values_are_one_sentence(run):
  spec = run['exported'].spec
  row = _json_rows(run['raw'][:1])[0]
  for value, message in (([101, 1.5], r"^row 0 field 'hist': element 1 is float 1\.5, but the elements"),
                         ([101, None], 'element 1 is NoneType None'),
                         ([101, [102]], 'element 1 is list'),
                         ([101, ''], "element 1 '' is empty or holds the separator"),
                         (['101|102'], 'holds the separator'),
                         ({'a': 1}, 'a sequence field is a list of ids'),
                         ('101||102', r"^row 0: sequence field hist='101\|\|102' has an empty element")):
    with pytest.raises(features.SchemaError, match=message):
      features.encode_rows(spec, [dict(row, hist=value)])


def test_load_scores_in_a_fresh_process_without_the_training_code(run, tmp_path):
  script = (
      'import json, sys\n'
      'from deres_jax import serving\n'
      f'rows = json.load(open({str(tmp_path / "rows.json")!r}))\n'
      f'print(json.dumps(serving.load({run["model_dir"]!r}).score_rows(rows).tolist()))\n'
      'bad = [m for m in sys.modules if m.startswith(("deres_jax.models", "deres_jax.train", "deres_jax.config"))]\n'
      'assert not bad, bad\n')
  rows = _json_rows(run['raw'][:30])
  (tmp_path / 'rows.json').write_text(json.dumps(rows))
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, XLA_FLAGS=os.environ.get('DERES_TEST_XLA_FLAGS', '')))
  assert out.returncode == 0, out.stderr[-2000:]
  np.testing.assert_allclose(json.loads(out.stdout.splitlines()[-1]), run['in_process'].score_rows(rows),
                             rtol=0, atol=1e-6)


def _read_scores(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_predict_reads_csv_and_parquet_histories_and_skips_bad_lists(run, tmp_path):
  raw = [dict(r) for r in run['raw'][:40]]
  raw[5]['hist'] = '101||102'                      # an empty element: a bad row, counted and skipped
  raw[9]['hist'] = '101|999'                       # an unseen id: scored with the OOV id, counted
  src = _write_csv(tmp_path / 'new.csv', raw, COLUMNS[1:])   # no label column
  out = tmp_path / 'scores.csv'
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'launch', 'predict.py'), f'--model={run["model_dir"]}',
                         f'--input={src}', f'--output={out}', '--noprogress'],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, XLA_FLAGS=os.environ.get('DERES_TEST_XLA_FLAGS', '')))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'scored 39 of 40 rows' in proc.stdout and 'bad_sequence: 1' in proc.stdout
  assert "new.csv:7: sequence field hist='101||102' has an empty element" in proc.stdout
  assert 'hist 1' in proc.stdout                  # the unseen history id, named by field
  got = _read_scores(out)
  assert [int(g['line']) for g in got] == list(range(2, 42)) and got[5]['probability'] == ''
  keep = [i for i in range(40) if i != 5]
  want = run['in_process'].score_rows(_json_rows([raw[i] for i in keep], lists=False))
  np.testing.assert_allclose([float(got[i]['probability']) for i in keep], want, rtol=0, atol=1e-6)
  with pytest.raises(BadInputError, match=r"new\.csv:7: sequence field hist='101\|\|102' has an empty element"):
    predict.predict_file(run['exported'], src, str(tmp_path / 'strict.csv'), strict=True, progress=False,
                         log=lambda *_: None)
  assert not os.path.exists(tmp_path / 'strict.csv')
  # Parquet: histories as list columns (ints and strings, a null list), scored like the CSV text.
  good = [raw[i] for i in keep]
  table = pa.table({'tags': pa.array([r['tags'].split('|') if r['tags'] else None for r in good],
                                     pa.list_(pa.string())),
                    'hist': pa.array([[int(x) for x in r['hist'].split('|')] if r['hist'] else [] for r in good],
                                     pa.list_(pa.int64())),
                    'price': [r['price'] for r in good], 'item': [r['item'] for r in good],
                    'user': [r['user'] for r in good]})
  pq.write_table(table, tmp_path / 'new.parquet')
  summary = predict.predict_file(run['exported'], str(tmp_path / 'new.parquet'), str(tmp_path / 'pq.csv'),
                                 progress=False, log=lambda *_: None)
  assert summary['scored'] == 39 and summary['oov'] == {'hist': 1}
  np.testing.assert_allclose([float(g['probability']) for g in _read_scores(tmp_path / 'pq.csv')], want,
                             rtol=0, atol=1e-6)


def _post(url, payload):
  import urllib.error  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  req = urllib.request.Request(url + '/score', data=json.dumps(payload).encode(),
                               headers={'Content-Type': 'application/json'}, method='POST')
  try:
    with urllib.request.urlopen(req, timeout=60) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_server_scores_rows_with_histories_and_rejects_bad_lists(run):
  rows = _json_rows(run['raw'])
  expect = run['in_process'].score_rows(rows)
  sizes, options = [1, 7, 20, 3, 40, 49], serving_app.ServeOptions(max_batch=32, max_wait_ms=5)
  starts = np.cumsum([0] + sizes[:-1])
  with serving_app.background(run['exported'], options) as url:
    with concurrent.futures.ThreadPoolExecutor(3) as pool:   # concurrent: the batcher merges them
      results = list(pool.map(lambda se: _post(url, {'rows': rows[se[0]:se[0] + se[1]]}), zip(starts, sizes)))
    for (status, body), s, n in zip(results, starts, sizes):
      assert status == 200, body
      np.testing.assert_allclose(body['scores'], expect[s:s + n], rtol=0, atol=1e-6)
    status, body = _post(url, [dict(rows[0], hist='101|999|998')])   # the CSV text, two unseen ids
    assert status == 200 and body['unseen'] == 2
    status, body = _post(url, [dict(rows[0], hist=[101, 'x|y'])])
    assert status == 422 and "field 'hist': element 1 'x|y' is empty or holds the separator" in body['error']
    status, body = _post(url, [dict(rows[0], hist=[101, 2.5])])
    assert status == 422 and 'elements of a sequence field are ids' in body['error']
    status, body = _post(url, [dict(rows[0], tags='red||blue')])
    assert status == 422 and 'has an empty element' in body['error']
    status, body = _post(url, rows[:2])   # still serving
    assert status == 200 and len(body['scores']) == 2
