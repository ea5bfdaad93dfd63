"""Serving multi-scenario models: the exported MI-DPG scores like the in-process one; unseen scenarios.

One tiny MI-DPG is trained once for the module on small synthetic multi-scenario data (12
steps) and exported once. The reference is the model applied directly to the test split's
encoded columns, not through the ScenarioScorer under test.
"""
import json
import os

import jax
import fresh_process
import numpy as np
import pytest

from deres_jax import multiscenario
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import models
from deres_jax.serving import exported, features, from_workdir, multiscenario_export
from deres_jax.train import trainer


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  c = config_lib.base_config()
  c.data.update(num_train=2048, num_val=512, num_test=512)
  c.model = models.model_config('midpg', embed_dim=4, hidden=(16, 8))
  c.train.update(batch_size=128, num_steps=12, log_every=6)
  c.eval.update(every_steps=6, batch_size=256)
  c.ckpt.update(every_steps=6)
  workdir = str(tmp_path_factory.mktemp('ms'))
  trainer.train_and_evaluate(c, workdir)
  model_dir = str(tmp_path_factory.mktemp('ms_model') / 'model')
  manifest = multiscenario_export.export(workdir, model_dir, platforms=('cpu',))
  r = multiscenario_export.restore(workdir)
  test = multiscenario.load(c.data).splits['test']
  return {'model_dir': model_dir, 'manifest': manifest, 'restored': r, 'test': test,
          'scorer': exported.load(model_dir, batch_size=64)}


# Modules a served model must not import.
MS_TRAINING = ("deres_jax.train", "deres_jax.multiscenario", "deres_jax.models", "deres_jax.config", "flax")


def _rows(info, split, n, scenario=None):
  rows = []
  for i in range(n):
    row = {c: float(split['dense'][i, j]) for j, c in enumerate(info['dense_names'])}
    row.update({c: int(split['cat'][i, j]) for j, c in enumerate(info['cat_names'])})
    row['scenario'] = info['scenario_names'][split['scenario'][i]] if scenario is None else scenario
    rows.append(row)
  return rows


def _reference(r, split, n, scenario=None):
  batch = {k: split[k][:n] for k in ('cat', 'dense')}
  batch['scenario'] = split['scenario'][:n] if scenario is None else np.full(n, scenario, np.int32)
  logits = jax.jit(from_workdir.apply_fn(r.model, r.step))(r.params, batch)
  return 1 / (1 + np.exp(-np.asarray(logits, np.float64)))


def test_exported_multiscenario_scores_like_in_process(run):
  r, scorer, test = run['restored'], run['scorer'], run['test']
  assert run['manifest']['scenario_names'] == list(r.info['scenario_names'])
  # The synthetic data's ids are its raw values: no vocabularies, rows give ids.
  assert run['manifest']['vocabulary'] == 'ids' and not scorer.raw
  assert not os.path.exists(os.path.join(run['model_dir'], 'vocab.npz'))
  probs, unseen, oov = scorer.score_rows(_rows(r.info, test, 100))
  np.testing.assert_allclose(probs, _reference(r, test, 100), rtol=0, atol=1e-6)
  assert unseen == 0 and oov.sum() == 0 and len(set(np.round(probs, 6))) > 20
  # The scenario matters: the same rows in another scenario score differently.
  other, _, _ = scorer.score_rows(_rows(r.info, test, 100, scenario=r.info['scenario_names'][3]))
  assert np.abs(other - probs).max() > 1e-4


def test_unseen_scenario_takes_the_shared_path_and_is_counted(run):
  r, scorer, test = run['restored'], run['scorer'], run['test']
  S = len(r.info['scenario_names'])
  probs, unseen, _ = scorer.score_rows(_rows(r.info, test, 40, scenario='a new market'))
  assert unseen == 40
  np.testing.assert_allclose(probs, _reference(r, test, 40, scenario=S), rtol=0, atol=1e-6)
  # The shared path is the model's own "unknown scenario" (id S, or any id outside [0, S)).
  np.testing.assert_allclose(probs, _reference(r, test, 40, scenario=-1), rtol=0, atol=1e-6)
  rows = _rows(r.info, test, 3)
  rows[0]['c0'], rows[1]['c1'], rows[2]['c2'] = 10 ** 6, None, 10 ** 30   # unseen ids (OOV, counted), a missing one
  _, _, oov = scorer.score_rows(rows)
  assert oov.tolist()[:3] == [1, 0, 1]
  with pytest.raises(features.SchemaError, match="lacks the fields \\['scenario'\\]"):
    scorer.score_rows([{k: v for k, v in rows[1].items() if k != 'scenario'}])
  with pytest.raises(features.SchemaError, match='expected an integer id'):
    scorer.score_rows([dict(rows[1], c0='x')])


def test_load_imports_no_training_code(run, tmp_path):
  rows = _rows(run['restored'].info, run['test'], 5)
  (tmp_path / 'rows.json').write_text(json.dumps(rows))
  script = (
      'from deres_jax import serving\n'
      f'rows = json.load(open({str(tmp_path / "rows.json")!r}))\n'
      f'p, unseen, _ = serving.load({run["model_dir"]!r}).score_rows(rows)\n'
      'print(json.dumps(p.tolist()))\n')
  got = fresh_process.run(script, MS_TRAINING)
  np.testing.assert_allclose(got, run['scorer'].score_rows(rows)[0], atol=1e-7)


def test_server_scores_scenario_rows_and_counts_unseen_scenarios(run):
  from deres_jax.serving import app as serving_app   # pylint: disable=g-import-not-at-top
  import urllib.error  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top

  def post(url, body):
    req = urllib.request.Request(url + '/score', data=json.dumps(body).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
    try:
      with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
      return e.code, json.loads(e.read())

  r, scorer, test = run['restored'], run['scorer'], run['test']
  rows = _rows(r.info, test, 12)
  for row in rows[8:]:
    row['scenario'] = 'elsewhere'
  want, _, _ = scorer.score_rows(rows)
  with serving_app.background(scorer, serving_app.ServeOptions(max_batch=16)) as url:
    status, body = post(url, {'rows': rows})
    assert status == 200 and body['unseen_scenarios'] == 4 and body['unseen'] == 0
    np.testing.assert_allclose(body['scores'], want, rtol=0, atol=1e-9)
    status, body = post(url, {'rows': [{k: v for k, v in rows[0].items() if k != 'scenario'}]})
    assert status == 422 and 'scenario' in body['error']
    status, body = post(url, {'rows': rows[:1]})   # still serving
    assert status == 200 and abs(body['scores'][0] - want[0]) < 1e-9


def test_predict_scenario_rows_from_csv_and_parquet(run, tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.csv as pa_csv  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  from deres_jax.serving import predict_families  # pylint: disable=g-import-not-at-top
  r, scorer = run['restored'], run['scorer']
  rows = _rows(r.info, run['test'], 30)
  rows[5]['scenario'] = 'new'
  want, _, _ = scorer.score_rows(rows)
  table = pa.Table.from_pylist([dict(row, label=1) for row in rows])   # a label column: ignored
  pq.write_table(table, tmp_path / 'rows.parquet')
  pa_csv.write_csv(table, tmp_path / 'rows.csv')
  for name in ('rows.parquet', 'rows.csv'):
    stats = predict_families.score_scenario_file(scorer, str(tmp_path / name), str(tmp_path / 'out.csv'),
                                                 log=lambda *_: None)
    got = [float(l.split(',')[1]) for l in (tmp_path / 'out.csv').read_text().splitlines()[1:]]
    np.testing.assert_allclose(got, want, rtol=1e-8)
    assert stats['rows'] == 30 and stats['unseen_scenarios'] == 1
