"""Serving a multi-scenario model trained on a raw-value CSV: rows in raw values, like a CTR model.

One tiny MI-DPG is trained once for the module on the Douban sample (tests/data/multiscenario),
split by lines into train/val/test files and read by schema (a dense column, Chinese strings
longer than 8 bytes, empty fields, quoted fields with commas), and exported once. The reference
is the model applied directly to the loader's encoded test split, not through the scorer.
"""
import csv
import json
import os
import shutil

import jax
import fresh_process
import numpy as np
import pytest

from deres_jax import multiscenario
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import models
from deres_jax.serving import exported, features, from_workdir, multiscenario_export, predict_families
from deres_jax.train import trainer

DOUBAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'multiscenario', 'douban_sample.csv')
CATS = ('user_id', 'item_id', 'living_place', 'join_time')


# Modules a served model must not import.
MS_TRAINING = ("deres_jax.train", "deres_jax.multiscenario", "deres_jax.models", "deres_jax.config", "flax")


def _split_files(directory):
  """The sample's first 2400 rows train, 300 validate, the last 300 test (a file each)."""
  with open(DOUBAN, encoding='utf-8') as f:
    header, *body = f.read().splitlines()
  files = {}
  for split, lines in (('train', body[:2400]), ('val', body[2400:2700]), ('test', body[2700:])):
    files[split] = str(directory / f'{split}.csv')
    with open(files[split], 'w', encoding='utf-8') as f:
      f.write('\n'.join([header] + lines) + '\n')
  return files


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  files = _split_files(tmp_path_factory.mktemp('douban'))
  c = config_lib.base_config()
  c.data.update(name='csv', format='', train_file=files['train'], val_file=files['val'], test_file=files['test'],
                scenario_column='domain', label_columns=('rating',), target='rating',
                categorical_columns=CATS, dense_columns=('time_bin',))
  c.model = models.model_config('midpg', embed_dim=4, hidden=(8,))
  c.train.update(batch_size=128, num_steps=8, log_every=4)
  c.eval.update(every_steps=8, batch_size=256, restore_best=False)
  c.ckpt.every_steps = 8
  workdir = str(tmp_path_factory.mktemp('ms_raw'))
  trainer.train_and_evaluate(c, workdir)
  model_dir = str(tmp_path_factory.mktemp('ms_raw_model') / 'model')
  manifest = multiscenario_export.export(workdir, model_dir, platforms=('cpu',))
  ds = multiscenario.load(c.data)
  with open(files['test'], newline='', encoding='utf-8') as f:
    raw = list(csv.DictReader(f))   # every value a string, as in the file
  return {'workdir': workdir, 'model_dir': model_dir, 'manifest': manifest, 'files': files, 'ds': ds,
          'restored': multiscenario_export.restore(workdir), 'raw': raw,
          'scorer': exported.load(model_dir, batch_size=64)}


def _reference(r, split, n=None, **changes):
  """Probabilities of the model on the encoded split (its first n rows), with columns changed."""
  batch = {k: np.array(split[k][:n]) for k in ('cat', 'dense', 'scenario')}
  for k, (index, value) in changes.items():
    batch[k][index] = value
  logits = jax.jit(from_workdir.apply_fn(r.model, r.step, r.variables))(r.params, batch)
  return 1 / (1 + np.exp(-np.asarray(logits, np.float64)))


def test_raw_rows_score_like_the_model_on_encoded_rows(run):
  r, scorer, raw, test = run['restored'], run['scorer'], run['raw'], run['ds'].splits['test']
  m = run['manifest']
  assert m['vocabulary'] == 'raw' and m['raw_format']['scenario_column'] == 'domain'
  assert os.path.isfile(os.path.join(run['model_dir'], 'vocab.npz')) and scorer.raw
  assert len(raw) == len(test['label']) == 300
  probs, unseen, oov = scorer.score_rows(raw)   # strings, labels included, the scenario under 'domain'
  want = _reference(r, test)
  np.testing.assert_allclose(probs, want, rtol=0, atol=1e-6)
  assert unseen == 0 and len(set(np.round(probs, 6))) > 20
  # Values unseen in training are counted per field, exactly where the loader gave the OOV id.
  present = np.asarray([[row[c] != '' for c in CATS] for row in raw])
  assert oov.tolist() == ((test['cat'] == 0) & present).sum(0).tolist() and oov[0] > 0
  # Numbers for numeric text, and the scenario under `scenario`: the same scores.
  typed = [dict({k: v for k, v in row.items() if k != 'domain'}, user_id=int(row['user_id']),
                time_bin=float(row['time_bin']) if row['time_bin'] else None, scenario=row['domain'])
           for row in raw[:20]]
  np.testing.assert_allclose(scorer.score_rows(typed)[0], want[:20], rtol=0, atol=1e-6)


def test_unseen_value_null_and_unseen_scenario(run):
  r, scorer, ds = run['restored'], run['scorer'], run['ds']
  place, empty_id = CATS.index('living_place'), ds.vocab['living_place'].index('') + 1
  # Test rows whose living place was seen in training and is not empty.
  sel = [i for i in range(300) if ds.splits['test']['cat'][i, place] not in (0, empty_id)][:4]
  test = {k: v[sel] for k, v in ds.splits['test'].items()}
  raw = [run['raw'][i] for i in sel]
  rows = [dict(row) for row in raw]
  rows[0]['living_place'] = 'Atlantis'       # never seen: the OOV id, counted
  rows[1]['living_place'] = None             # null: the missing value (the empty field's id), not counted
  rows[2]['domain'] = 'podcasts'             # a scenario not trained on: the shared path, counted
  rows[3]['time_bin'] = None                 # a missing dense value
  base = scorer.score_rows(raw)[2]
  probs, unseen, oov = scorer.score_rows(rows)
  assert unseen == 1 and (oov - base).tolist() == [0, 0, 1, 0]
  want = _reference(r, test, cat=((0, place), 0))
  want[1] = _reference(r, test, cat=((1, place), empty_id))[1]
  want[2] = _reference(r, test, scenario=(2, len(ds.scenario_names)))[2]
  want[3] = _reference(r, test, dense=((3, 0), np.nan))[3]
  np.testing.assert_allclose(probs, want, rtol=0, atol=1e-6)
  assert np.abs(want - _reference(r, test)).min() > 0   # every change changed the score
  raw = run['raw']
  with pytest.raises(features.SchemaError, match="lacks the fields \\['scenario'\\]"):
    scorer.score_rows([{k: v for k, v in raw[0].items() if k != 'domain'}])
  with pytest.raises(features.SchemaError, match='unknown fields'):
    scorer.score_rows([dict(raw[0], colour='red')])
  with pytest.raises(features.SchemaError, match='expected a string, a number or null'):
    scorer.score_rows([dict(raw[0], item_id=[1, 2])])


def test_predict_reads_the_raw_csv_and_parquet(run, tmp_path):
  import pyarrow.csv as pa_csv  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  want = _reference(run['restored'], run['ds'].splits['test'])
  parquet = str(tmp_path / 'test.parquet')   # typed columns (ints, dates): read as the loader reads them
  pq.write_table(pa_csv.read_csv(run['files']['test']), parquet)
  in_process = multiscenario_export.in_process(run['workdir'], 64)   # launch/predict.py --workdir
  for scorer, path in ((run['scorer'], run['files']['test']), (run['scorer'], parquet),
                       (in_process, run['files']['test'])):
    stats = predict_families.score_scenario_file(scorer, path, str(tmp_path / 'out.csv'), log=lambda *_: None)
    got = [float(line.split(',')[1]) for line in (tmp_path / 'out.csv').read_text().splitlines()[1:]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert stats['rows'] == 300 and stats['unseen_scenarios'] == 0 and sum(stats['oov']) > 0
  # A file without the scenario column: --scenario names it for every row.
  no_scen = tmp_path / 'movies.csv'
  with open(run['files']['test'], encoding='utf-8') as f:
    movie = [row for row in csv.DictReader(f) if row['domain'] == 'movie']
  with open(no_scen, 'w', newline='', encoding='utf-8') as f:
    w = csv.DictWriter(f, [k for k in movie[0] if k != 'domain'])
    w.writeheader()
    w.writerows([{k: v for k, v in row.items() if k != 'domain'} for row in movie])
  predict_families.score_scenario_file(run['scorer'], str(no_scen), str(tmp_path / 'out.csv'),
                                       log=lambda *_: None, scenario='movie')
  got = [float(line.split(',')[1]) for line in (tmp_path / 'out.csv').read_text().splitlines()[1:]]
  np.testing.assert_allclose(got, run['scorer'].score_rows(movie)[0], rtol=0, atol=1e-9)


def test_fresh_process_scores_raw_rows_without_training_code(run, tmp_path):
  rows = run['raw'][:6]
  (tmp_path / 'rows.json').write_text(json.dumps(rows, ensure_ascii=False), encoding='utf-8')
  script = (
      'from deres_jax import serving\n'
      f'rows = json.load(open({str(tmp_path / "rows.json")!r}, encoding="utf-8"))\n'
      f'p, unseen, oov = serving.load({run["model_dir"]!r}).score_rows(rows)\n'
      'print(json.dumps(p.tolist()))\n')
  got = fresh_process.run(script, MS_TRAINING)
  np.testing.assert_allclose(got,
                             _reference(run['restored'], run['ds'].splits['test'], 6), rtol=0, atol=1e-6)


def test_old_exports_score_ids_and_changed_data_is_refused(run, tmp_path):
  # An export written before vocabularies were saved (no `vocabulary`, no vocab.npz) scores ids.
  old = str(tmp_path / 'old_model')
  shutil.copytree(run['model_dir'], old)
  os.remove(os.path.join(old, 'vocab.npz'))
  manifest = {k: v for k, v in run['manifest'].items() if k not in ('vocabulary', 'raw_format')}
  (tmp_path / 'old_model' / 'manifest.json').write_text(json.dumps(manifest))
  scorer, test = exported.load(old), run['ds'].splits['test']
  assert not scorer.raw
  rows = [dict({c: int(test['cat'][i, j]) for j, c in enumerate(CATS)}, time_bin=float(test['dense'][i, 0]),
               scenario=int(test['scenario'][i])) for i in range(10)]
  np.testing.assert_allclose(scorer.score_rows(rows)[0], _reference(run['restored'], test, 10), rtol=0, atol=1e-6)
  # Data files edited after training would silently renumber the values: export refuses.
  workdir = str(tmp_path / 'run')
  shutil.copytree(run['workdir'], workdir)
  with open(run['files']['train'], encoding='utf-8') as f:
    header, first, second, *rest = f.read().splitlines()
  edited = tmp_path / 'train.csv'
  edited.write_text('\n'.join([header, second, first, *rest]) + '\n', encoding='utf-8')
  config = json.loads((tmp_path / 'run' / 'config.json').read_text())
  config['data']['train_file'] = str(edited)
  (tmp_path / 'run' / 'config.json').write_text(json.dumps(config))
  with pytest.raises(from_workdir.WorkdirError, match='the data files changed since training'):
    multiscenario_export.export(workdir, str(tmp_path / 'model'), platforms=('cpu',))


def test_server_scores_raw_rows(run):
  import urllib.request  # pylint: disable=g-import-not-at-top
  from deres_jax.serving import app as serving_app   # pylint: disable=g-import-not-at-top
  rows = [dict(row) for row in run['raw'][:10]]
  rows[0]['item_id'] = 'no such item'
  want, _, oov = run['scorer'].score_rows(rows)
  with serving_app.background(run['scorer'], serving_app.ServeOptions(max_batch=16)) as url:
    req = urllib.request.Request(url + '/score', data=json.dumps({'rows': rows}).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(req, timeout=60) as r:
      body = json.loads(r.read())
  np.testing.assert_allclose(body['scores'], want, rtol=0, atol=1e-9)
  assert body['unseen'] == int(oov.sum()) >= 1 and body['unseen_scenarios'] == 0


def test_predict_reads_the_formats_separator_and_column_names(tmp_path):
  """A headerless ';' file of a BYO format (data.header=False, data.columns): no training needed."""
  from deres_jax.multiscenario import data as ms_data  # pylint: disable=g-import-not-at-top
  from deres_jax.serving.scenario_scorer import ScenarioScorer  # pylint: disable=g-import-not-at-top
  vocab = {'u': ('7', '007', ''), 'i': ('a;b', 'x')}   # '007' and '7' are two values; quoted 'a;b'
  info = {'dense_names': ['price'], 'cat_names': ['u', 'i'], 'vocab_sizes': [4, 3], 'scenario_names': ['app', 'web'],
          'vocabulary': 'raw', 'raw_format': {'scenario_column': 'site', 'labels': ['clk'], 'group': '', 'sep': ';',
                                              'header': False, 'columns': ['site', 'u', 'i', 'price', 'clk']}}
  keys = ms_data.vocab_keys(vocab)
  # logits = (100 * u id + 10 * i id + scenario id + price (NaN -> -1)) / 100: every input visible.
  scorer = ScenarioScorer(lambda b: (100 * b['cat'][:, 0] + 10 * b['cat'][:, 1] + b['scenario']
                                     + np.nan_to_num(b['dense'][:, 0], nan=-1.0)).astype(np.float32) / 100,
                          info, 8, (keys['u'], keys['i']))
  (tmp_path / 'new.csv').write_text('web;007;"a;b";2;1\napp;7;x;;0\nshop;;y;0.5;0\n')
  predict_families.score_scenario_file(scorer, str(tmp_path / 'new.csv'), str(tmp_path / 'out.csv'),
                                       log=lambda *_: None)
  got = [float(line.split(',')[1]) for line in (tmp_path / 'out.csv').read_text().splitlines()[1:]]
  logits = np.asarray([200 + 10 + 1 + 2, 100 + 20 + 0 - 1, 300 + 0 + 2 + 0.5]) / 100
  np.testing.assert_allclose(got, 1 / (1 + np.exp(-logits)), rtol=1e-6)
