"""Scoring and serving: in-process vs exported predictions, predict.py, the HTTP server, plots.

One tiny model is trained once for the module (configs/tiny.py, 12 steps) and exported once;
every test reuses them. The server runs on an ephemeral loopback port and is stopped at the
end of its test.
"""
import concurrent.futures
import csv
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from deres_jax import data as data_lib
from deres_jax.data.bad_input import BadInputError
from deres_jax.serving import app as serving_app
from deres_jax.serving import export as export_lib
from deres_jax.serving import exported, features, from_workdir, predict
from deres_jax.train import trainer
from deres_jax.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  c = load_file(os.path.join(ROOT, 'configs', 'tiny.py'))
  c.train.update(num_steps=12, log_every=3)
  c.eval.every_steps = 6
  c.ckpt.update(every_steps=6, max_to_keep=2)
  return c


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, model_dir, dataset, in-process scorer, exported scorer, CSV of 200 test rows)."""
  root = tmp_path_factory.mktemp('serving')
  config = _tiny_config()
  dataset = data_lib.load(config.data)
  workdir, model_dir = str(root / 'run'), str(root / 'model')
  trainer.train_and_evaluate(config, workdir, dataset=dataset)
  export_lib.export(workdir, model_dir)
  rows_csv = str(root / 'new.csv')
  features.write_synthetic_csv(dataset.splits['test'], dataset.schema, rows_csv, rows=200)
  return {'workdir': workdir, 'model_dir': model_dir, 'dataset': dataset, 'csv': rows_csv,
          'in_process': from_workdir.from_workdir(workdir), 'exported': exported.load(model_dir)}


def _rows(path):
  """The CSV's rows as JSON-like dicts (empty -> None), as a client would send them."""
  with open(path) as f:
    return [{k: (v or None) for k, v in r.items()} for r in csv.DictReader(f)]


def test_exported_matches_in_process_and_the_raw_encoding_matches_the_split(run):
  rows = _rows(run['csv'])
  test = run['dataset'].splits['test']
  # The raw CSV encodes to exactly the split's ids and values (identity vocabularies).
  enc = features.encode_rows(run['in_process'].spec, rows)
  np.testing.assert_array_equal(enc.cat, test['cat'][:200])
  np.testing.assert_array_equal(enc.dense, test['dense'][:200])
  assert enc.oov.sum() == 0
  p_in = run['in_process'].score_rows(rows)
  p_ex = run['exported'].score_rows(rows)
  np.testing.assert_allclose(p_ex, p_in, rtol=0, atol=1e-6)
  # ... and equal the trainer's own evaluation path on the same rows (logits of the split).
  np.testing.assert_allclose(run['in_process'].probabilities(test['cat'][:200], test['dense'][:200]), p_in,
                             rtol=0, atol=1e-6)
  assert 0.0 < p_in.min() and p_in.max() < 1.0 and p_in.std() > 0
  manifest = run['exported'].info
  with open(os.path.join(run['workdir'], 'summary.json')) as f:
    summary = json.load(f)
  assert manifest['metrics']['test_auc'] == summary['test_auc']
  assert manifest['schema']['cat_names'] == list(run['dataset'].schema.cat_names)
  assert manifest['library_version'] and manifest['step'] == summary['best_step']
  assert set(manifest['platforms']) == {'cpu', 'cuda', 'tpu'}


def test_load_needs_neither_training_code_nor_config(run, tmp_path):
  """A fresh process loads and scores the export; no model, trainer or config module is imported."""
  script = (
      'import json, sys\n'
      'from deres_jax import serving\n'
      f'rows = json.load(open({str(tmp_path / "rows.json")!r}))\n'
      f'print(json.dumps(serving.load({run["model_dir"]!r}).score_rows(rows).tolist()))\n'
      'bad = [m for m in sys.modules if m.startswith(("deres_jax.models", "deres_jax.train", "deres_jax.config"))]\n'
      'assert not bad, bad\n')
  rows = _rows(run['csv'])[:20]
  (tmp_path / 'rows.json').write_text(json.dumps(rows))
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, XLA_FLAGS=os.environ.get('DERES_TEST_XLA_FLAGS', '')))
  assert out.returncode == 0, out.stderr[-2000:]
  np.testing.assert_allclose(json.loads(out.stdout.splitlines()[-1]), run['in_process'].score_rows(rows),
                             rtol=0, atol=1e-6)


def test_schema_mismatch_gives_one_clear_sentence(run, tmp_path):
  spec = run['exported'].spec
  row = _rows(run['csv'])[0]
  with pytest.raises(features.SchemaError, match=r"^row 0 lacks the field 'C7'"):
    features.encode_rows(spec, [{k: v for k, v in row.items() if k != 'C7'}])
  with pytest.raises(features.SchemaError, match=r"^row 0 has unknown field 'colour'"):
    features.encode_rows(spec, [dict(row, colour='red')])
  with pytest.raises(features.SchemaError, match=r"^row 0: field I2='x' is not a valid number"):
    features.encode_rows(spec, [dict(row, I2='x')])
  with pytest.raises(features.SchemaError, match='expected a number, a string or null'):
    features.encode_rows(spec, [dict(row, C1=[1, 2])])
  # A file whose header names other columns: stops before scoring, naming them.
  lines = open(run['csv']).read().splitlines()
  renamed = tmp_path / 'renamed.csv'
  renamed.write_text('\n'.join([lines[0].replace('C26', 'C99')] + lines[1:5]) + '\n')
  with pytest.raises(features.SchemaError, match=r"it lacks \['C26'\]; it has unknown \['C99'\]"):
    predict.predict_file(run['exported'], str(renamed), str(tmp_path / 'out.csv'), progress=False)
  assert not os.path.exists(tmp_path / 'out.csv')


def test_predict_cli_one_row_per_input_row_in_order(run, tmp_path):
  lines = open(run['csv']).read().splitlines()
  header, body = lines[0], lines[1:41]
  cols = header.split(',')
  edited = list(body)
  edited[3] = ''                                           # a blank line
  edited[7] = 'a,b,c'                                      # a wrong field count
  r = edited[11].split(',')
  r[cols.index('I1')] = 'abc'                              # not a number
  edited[11] = ','.join(r)
  r = edited[15].split(',')
  r[cols.index('C1')] = '987654'                           # an id no vocabulary has: OOV
  edited[15] = ','.join(r)
  src = tmp_path / 'new.csv'
  src.write_text('\n'.join([header] + edited) + '\n')
  out = tmp_path / 'scores.csv'
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'launch', 'predict.py'), f'--workdir={run["workdir"]}',
                         f'--input={src}', f'--output={out}', '--noprogress'],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'scored 37 of 40 rows' in proc.stdout and 'bad rows skipped: 3' in proc.stdout
  assert 'new.csv:9: 3 fields, expected 40' in proc.stdout  # the file's own field counts
  assert 'C1 1' in proc.stdout  # the unseen id is counted and named
  with open(out) as f:
    got = list(csv.DictReader(f))
  assert [int(g['line']) for g in got] == list(range(2, 42))  # one line per input row, in order
  skipped = {3, 7, 11}
  assert [i for i, g in enumerate(got) if g['probability'] == ''] == sorted(skipped)
  keep = [i for i in range(40) if i not in skipped]
  rows = [{k: (v or None) for k, v in zip(cols, edited[i].split(','))} for i in keep]
  expect = run['in_process'].score_rows(rows)
  np.testing.assert_allclose([float(got[i]['probability']) for i in keep], expect, rtol=0, atol=1e-6)
  # --strict stops at the first bad row, naming it; no output file appears.
  with pytest.raises(BadInputError, match=r'new\.csv:5: blank line'):
    predict.predict_file(run['in_process'], str(src), str(tmp_path / 'strict.csv'), strict=True, progress=False)
  assert not os.path.exists(tmp_path / 'strict.csv')


def _post(url, body: bytes):
  req = urllib.request.Request(url + '/score', data=body, headers={'Content-Type': 'application/json'},
                               method='POST')
  try:
    with urllib.request.urlopen(req, timeout=60) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_server_scores_like_in_process_and_rejects_bad_requests(run):
  rows = _rows(run['csv'])
  expect = run['in_process'].score_rows(rows)
  sizes = [1, 3, 8, 17, 40, 2, 31, 5, 60, 33]  # 200 rows in 10 requests of different sizes
  starts = np.cumsum([0] + sizes[:-1])
  options = serving_app.ServeOptions(max_batch=32, max_wait_ms=5, max_body_bytes=64_000, max_rows=100)
  with serving_app.background(run['exported'], options) as url:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # concurrent: the batcher merges them
      results = list(pool.map(lambda se: _post(url, json.dumps({'rows': rows[se[0]:se[0] + se[1]]}).encode()),
                              zip(starts, sizes)))
    for (status, body), s, n in zip(results, starts, sizes):
      assert status == 200, body
      np.testing.assert_allclose(body['scores'], expect[s:s + n], rtol=0, atol=1e-6)
    status, body = _post(url, b'{"rows": [{"I1": 1,')
    assert status == 400 and body['error'].startswith('malformed JSON')
    status, body = _post(url, json.dumps({'rows': [{k: v for k, v in rows[0].items() if k != 'C3'}]}).encode())
    assert status == 422 and "lacks the field 'C3'" in body['error']
    status, body = _post(url, json.dumps({'rows': rows[:5] * 100}).encode())  # ~100 kB > 64 kB
    assert status == 413 and 'larger than the limit' in body['error']
    status, body = _post(url, json.dumps({'data': []}).encode())
    assert status == 400
    # Still serving after the bad requests.
    status, body = _post(url, json.dumps(rows[:2]).encode())
    assert status == 200 and len(body['scores']) == 2
    with urllib.request.urlopen(url + '/healthz', timeout=30) as r:
      health = json.loads(r.read())
    assert health['status'] == 'ok' and health['step'] == run['exported'].info['step']
    assert 1 <= health['batches'] <= 11 and health['requests'] == 15


def test_plot_draws_every_run_on_shared_axes(run, tmp_path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from deres_jax import plotting  # pylint: disable=g-import-not-at-top
  fig = plotting.plot_runs([run['workdir'], run['workdir']], labels=['a', 'b'])
  axes = fig.axes
  assert [a.get_title() for a in axes] == ['training loss (BCE)', 'validation AUC', 'validation logloss']
  metrics = plotting.read_metrics(run['workdir'])
  loss = axes[0].get_lines()
  assert len(loss) == 2 and list(loss[0].get_ydata()) == metrics['train/loss'][1]
  assert list(axes[1].get_lines()[1].get_xdata()) == metrics['eval/auc'][0]
  out = tmp_path / 'curves.png'
  plotting.save(fig, str(out))
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(plotting.NoMetricsError, match='no metrics.jsonl'):
    plotting.read_metrics(str(tmp_path))


@pytest.mark.parametrize('name', ['criteo', 'avazu'])
def test_raw_rows_encode_like_preparation_with_or_without_label(name, tmp_path):
  """Prepared Criteo/Avazu: scoring's encoding of the raw file equals preparation's ids, in order."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from deres_jax.data import avazu, criteo, delimited, prepared, preprocess  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(ROOT, 'tests', 'data')
  src = os.path.join(data_dir, 'paddlerec_criteo_raw_train_sample.txt' if name == 'criteo' else
                     'deepctr_avazu_sample.txt')
  row_spec = criteo.spec() if name == 'criteo' else avazu.spec()
  quiet = dict(log=lambda *a: None)
  out = str(tmp_path / 'prepared')
  preprocess.prepare(row_spec, [src], out, preprocess.Options(min_count=2), **quiet)
  preprocess.prepare(row_spec, [src], str(tmp_path / 'again'), vocab_from=out, **quiet)
  _, again, _ = prepared.load_splits(str(tmp_path / 'again'), splits=('all',))
  schema, spec = from_workdir.input_spec(ml_collections.ConfigDict({'name': name, 'path': out}))
  assert schema.cat_names == row_spec.cat_names and len(spec.vocab) == len(schema.cat_names)
  # The same file without its label column (Criteo: the first field; Avazu: 'click').
  text = open(src).read().splitlines()
  label_at = row_spec.columns.index(row_spec.label)
  no_label = tmp_path / 'no_label.txt'
  no_label.write_text('\n'.join(row_spec.sep.join(f for i, f in enumerate(line.split(row_spec.sep))
                                                 if i != label_at) for line in text) + '\n')
  for path, want_label in ((src, True), (str(no_label), False)):
    assert predict.detect_label(spec, path) is want_label
    rspec = features.scoring_spec(spec, want_label)
    from deres_jax.data.bad_input import BadInput  # pylint: disable=g-import-not-at-top
    encs = [features.encode_text(spec, rspec, d, first, path, BadInput())
            for first, d in delimited.read_chunks(path, 4096)]  # several chunks
    np.testing.assert_array_equal(np.concatenate([e.cat for e in encs]), again['all']['cat'])
    # Values rarer than min_count in train are OOV; missing values are not counted as unseen.
    assert 0 < sum(e.oov.sum() for e in encs) <= (again['all']['cat'] == 0).sum()


def test_without_a_best_checkpoint_the_newest_regular_one_is_restored(run, tmp_path):
  """Only the parameters are read from a full train-state checkpoint (an Orbax partial restore)."""
  import jax  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  shutil.copytree(run['workdir'], workdir, ignore=shutil.ignore_patterns('best', '*.lock'))
  regular = from_workdir.restore(workdir)
  best = from_workdir.restore(run['workdir'])
  assert regular.step == 12 and best.step == best.summary['best_step']
  same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), regular.params, best.params)
  assert all(jax.tree.leaves(same)) == (best.step == 12)
