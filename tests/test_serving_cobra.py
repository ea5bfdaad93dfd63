"""Serving COBRA: the exported BeamFusion retriever, `load`, and POST /recommend.

One tiny COBRA (configs/genrec/beauty_cobra.py:tiny, shortened as tests/test_serving_genrec.py
trains TIGER) is trained once for the module on the Beauty slice and exported once. The
reference is the training task's own evaluation ranking (`CobraTask._jit_rank`: its encoder
input, beam search, dense vectors and BeamFusion over its item vectors), not the Retriever
class under test.
"""
import json
import os
import urllib.request

import jax.numpy as jnp
import fresh_process
import numpy as np
import pytest

from deres_jax.serving import app as serving_app
from deres_jax.serving import exported, genrec_export
from test_serving_genrec import _histories, _post, _train


@pytest.fixture(scope='module')
def cobra_run(tmp_path_factory):
  workdir = _train('beauty_cobra', str(tmp_path_factory.mktemp('cobra')))
  model_dir = str(tmp_path_factory.mktemp('cobra_model') / 'model')
  restored = genrec_export.restore(workdir)
  manifest = genrec_export.export(workdir, model_dir, platforms=('cpu',), beam_sizes=(10,), restored=restored)
  return {'workdir': workdir, 'model_dir': model_dir, 'manifest': manifest, 'restored': restored,
          'retriever': exported.load(model_dir, batch_size=8)}


def _reference(restored, histories, users):
  """(items, scores) [n, K] of the task's evaluation ranking, in its eval batch (one padded shape)."""
  task = restored.task
  L, n = task.data.max_len, len(histories)
  assert n <= task.eval_batch
  hist = np.zeros((task.eval_batch, L), np.int32)
  for r, h in enumerate(histories):
    h = h[-L:]
    if h:
      hist[r, L - len(h):] = h
  users = np.pad(np.asarray(users, np.int64), (0, task.eval_batch - n))
  enc = jnp.asarray(task.layout.encoder_input(users, hist, task.item_tok))
  items, scores = task._jit_rank(restored.params, enc)  # pylint: disable=protected-access
  # `_rank` (what evaluation turns into metrics) is the same ranking's items.
  np.testing.assert_array_equal(np.asarray(task._rank(restored.params, enc)), items)  # pylint: disable=protected-access
  return np.asarray(items)[:n], np.asarray(scores)[:n]


def _check(retriever, restored, histories, users, k=10):
  n_items = restored.task.data.num_items
  want_items, want_scores = _reference(restored, histories, users)
  got = retriever.recommend(histories, k=k, users=users)
  for rec, wi, ws in zip(got, want_items, want_scores):
    real = (wi > 0) & np.isfinite(ws)
    np.testing.assert_array_equal(rec.items, wi[real][:k])
    np.testing.assert_allclose(rec.scores, ws[real][:k], rtol=0, atol=1e-5)
    assert ((rec.items >= 1) & (rec.items <= n_items)).all() and len(set(rec.items.tolist())) == len(rec.items)
    assert np.all(np.diff(rec.scores) <= 0)
  return got


def test_exported_cobra_equals_in_process_beam_fusion(cobra_run):
  r, retriever, manifest = cobra_run['restored'], cobra_run['retriever'], cobra_run['manifest']
  n_items, L = r.task.data.num_items, r.task.data.max_len
  assert manifest['system'] == 'cobra' and manifest['num_items'] == n_items and retriever.max_len == L
  assert manifest['cobra'] == {'item_vectors': 'learned', 'dense_dim': 16, 'candidates': 'ann',
                               'fusion_weight': 0.5, 'cos_scale': 10.0}
  with np.load(os.path.join(cobra_run['model_dir'], 'item_vectors.npz')) as z:
    np.testing.assert_allclose(z['item_vectors'], np.asarray(r.task.item_vectors(r.params)), rtol=0, atol=0)
  histories = _histories(64, n_items, L)   # = the task's eval batch size
  users = np.arange(64) * 7
  got = _check(retriever, r, histories, users)
  assert all(len(rec.items) == 10 for rec in got)   # 'ann': every catalogue item is a candidate
  # A smaller k is the best k of the same fusion.
  for rec, full in zip(retriever.recommend(histories, k=3, users=users), got):
    np.testing.assert_array_equal(rec.items, full.items[:3])
  # The in-process Retriever (predict.py --workdir=) ranks the same.
  local = genrec_export.in_process(cobra_run['workdir'], batch_size=8)
  for rec, full in zip(local.recommend(histories[:8], k=10, users=users[:8]), got):
    np.testing.assert_array_equal(rec.items, full.items)
    np.testing.assert_allclose(rec.scores, full.scores, rtol=0, atol=1e-5)


def test_beam_candidates_export_equals_in_process(cobra_run, tmp_path):
  """candidates='beam' (fusion re-ranks the beams' own items), exported from the same run."""
  r = genrec_export.restore(cobra_run['workdir'])
  r.task.cobra.candidates = 'beam'   # the config the task's jitted ranking reads (traced below, after this)
  model_dir = str(tmp_path / 'model')
  manifest = genrec_export.export(cobra_run['workdir'], model_dir, platforms=('cpu',), beam_sizes=(10,), restored=r)
  assert manifest['cobra']['candidates'] == 'beam'
  retriever = exported.load(model_dir, batch_size=8)
  histories = _histories(64, r.task.data.num_items, r.task.data.max_len, seed=5)
  _check(retriever, r, histories, np.arange(64))


def test_content_item_vectors_export_equals_in_process(tmp_path):
  """item_vectors='content': the content tower's vectors, computed once at export, rank as in process."""
  workdir = _train('beauty_cobra', str(tmp_path / 'run'), preset='tiny_content')
  r = genrec_export.restore(workdir)
  manifest = genrec_export.export(workdir, str(tmp_path / 'model'), platforms=('cpu',), beam_sizes=(10,), restored=r)
  assert manifest['cobra']['item_vectors'] == 'content' and 'item_table' not in r.params
  retriever = exported.load(str(tmp_path / 'model'), batch_size=8)
  histories = _histories(64, r.task.data.num_items, r.task.data.max_len, seed=6)
  _check(retriever, r, histories, np.arange(64))


def test_load_imports_no_training_code(cobra_run):
  """A fresh process loads the COBRA export and recommends; nothing of training or genrec loads."""
  histories = _histories(5, cobra_run['retriever'].num_items, 20, seed=1)
  script = (
      'from deres_jax import serving\n'
      f'recs = serving.load({cobra_run["model_dir"]!r}).recommend({histories!r}, k=5)\n'
      'print(json.dumps([[r.items.tolist(), r.scores.tolist()] for r in recs]))\n')
  got = fresh_process.run(script, ('deres_jax.train', 'deres_jax.genrec', 'deres_jax.models', 'deres_jax.config',
                                   'flax', 'optax', 'orbax'), timeout=300)
  want_items, want_scores = _reference(cobra_run['restored'], histories, [0] * 5)
  for (items, scores), wi, ws in zip(got, want_items, want_scores):
    assert items == wi[:5].tolist()
    np.testing.assert_allclose(scores, ws[:5], rtol=0, atol=1e-5)


def test_server_recommends_the_in_process_ranking(cobra_run):
  retriever, r = cobra_run['retriever'], cobra_run['restored']
  histories = _histories(8, retriever.num_items, retriever.max_len, seed=2)
  want_items, want_scores = _reference(r, histories, [0] * 8)
  with serving_app.background(retriever, serving_app.ServeOptions(max_batch=8, max_wait_ms=5)) as url:
    status, body = _post(url, {'history': histories[0], 'k': 10})
    assert status == 200, body
    assert body['items'] == want_items[0].tolist()
    np.testing.assert_allclose(body['scores'], want_scores[0], rtol=0, atol=1e-5)
    status, body = _post(url, [{'history': h, 'k': 10, 'user': 0} for h in histories])   # a batch
    assert status == 200 and len(body['results']) == 8
    for res, wi, ws in zip(body['results'], want_items, want_scores):
      assert res['items'] == wi.tolist()
      np.testing.assert_allclose(res['scores'], ws, rtol=0, atol=1e-5)
    with urllib.request.urlopen(url + '/healthz', timeout=30) as resp:
      health = json.loads(resp.read())
  assert health['status'] == 'ok' and health['model'] == 'cobra' and health['beam_sizes'] == [10]
