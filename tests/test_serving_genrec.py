"""Serving generative retrieval: the exported TIGER/SASRec retrievers, `load`, and POST /recommend.

One tiny TIGER (configs/genrec/beauty_tiger_rqvae.py:tiny, shortened) and one tiny SASRec are
trained once for the module on the Beauty slice and exported once; every test reuses them.
The reference is computed from the training task directly (its own TokenLayout encoder
input and beam search), not through the Retriever class under test.
"""
import concurrent.futures
import json
import os
import urllib.error
import urllib.request

import jax.numpy as jnp
import fresh_process
import numpy as np
import pytest

from deres_jax.genrec import sasrec
from deres_jax.serving import app as serving_app
from deres_jax.serving import exported, genrec_export
from deres_jax.serving.retriever import RequestError
from deres_jax.train import trainer
from test_genrec_sasrec import genrec_config

SLICE = os.path.join(os.path.dirname(__file__), 'data', 'genrec')


def _train(name, workdir, preset='tiny'):
  config = genrec_config(name, preset)
  config.data.path = SLICE
  if name != 'beauty_sasrec':
    config.tokenizer.update(steps=10, restart_every=5, log_every=10)
  config.train.update(num_steps=2, log_every=2)
  config.eval.update(every_steps=2, num_val_users=32, num_test_users=32)
  config.ckpt.every_steps = 2
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def tiger_run(tmp_path_factory):
  workdir = _train('beauty_tiger_rqvae', str(tmp_path_factory.mktemp('tiger')))
  model_dir = str(tmp_path_factory.mktemp('tiger_model') / 'model')
  restored = genrec_export.restore(workdir)
  manifest = genrec_export.export(workdir, model_dir, platforms=('cpu',), beam_sizes=(10,), restored=restored)
  # batch_size 8: every call runs the one padded shape [8, S], compiled once for the module.
  return {'workdir': workdir, 'model_dir': model_dir, 'manifest': manifest, 'restored': restored,
          'retriever': exported.load(model_dir, batch_size=8)}


def _histories(n, num_items, max_len, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, 2 * max_len + 5, n)   # empty, short and longer than the cap
  return [rng.integers(1, num_items + 1, int(l)).tolist() for l in lengths]


def _tiger_reference(restored, histories, users):
  """(items, scores) [n, K] from the task: its encoder input of the last L items, its beam search."""
  task = restored.task
  L = task.data.max_len
  hist = np.zeros((len(histories), L), np.int32)
  for r, h in enumerate(histories):
    h = h[-L:]
    if h:
      hist[r, L - len(h):] = h
  enc = jnp.asarray(task.layout.encoder_input(np.asarray(users), hist, task.item_tok))
  items, scores, _ = task._beams(restored.params, task.encode(restored.params, enc), enc)  # pylint: disable=protected-access
  return np.asarray(items), np.asarray(scores)


def test_exported_tiger_equals_in_process_beam_search(tiger_run):
  r, retriever = tiger_run['restored'], tiger_run['retriever']
  n_items, L = r.task.data.num_items, r.task.data.max_len
  assert tiger_run['manifest']['num_items'] == n_items and retriever.max_len == L
  histories = _histories(64, n_items, L)   # = the task's eval batch size: one padded shape
  users = np.arange(64) * 7
  want_items, want_scores = _tiger_reference(r, histories, users)
  got = retriever.recommend(histories, k=10, users=users)
  for rec, wi, ws, h in zip(got, want_items, want_scores, histories):
    np.testing.assert_array_equal(rec.items, wi)
    np.testing.assert_allclose(rec.scores, ws, rtol=0, atol=1e-5)
    assert ((rec.items >= 1) & (rec.items <= n_items)).all() and len(set(rec.items.tolist())) == 10
    assert np.all(np.diff(rec.scores) <= 0) and rec.truncated == max(0, len(h) - L) and rec.unknown == 0
  # A smaller k is the best k of the same beams.
  top3 = retriever.recommend(histories, k=3, users=users)
  for rec, wi in zip(top3, want_items):
    np.testing.assert_array_equal(rec.items, wi[:3])


def test_long_histories_keep_the_most_recent_items_and_unknown_ids_are_dropped(tiger_run):
  retriever = tiger_run['retriever']
  n, L = retriever.num_items, retriever.max_len
  recent = list(range(1, L + 1))
  long, = retriever.recommend([list(range(100, 140)) + recent], k=10)
  short, = retriever.recommend([recent], k=10)
  np.testing.assert_array_equal(long.items, short.items)
  np.testing.assert_allclose(long.scores, short.scores, atol=1e-6)
  assert long.truncated == 40 and short.truncated == 0
  dirty, = retriever.recommend([[0, n + 1, -3] + recent[:5] + [10 ** 9, 10 ** 30]], k=10)
  clean, = retriever.recommend([recent[:5]], k=10)
  np.testing.assert_array_equal(dirty.items, clean.items)
  assert dirty.unknown == 5 and clean.unknown == 0
  with pytest.raises(RequestError, match='item ids must be integers'):
    retriever.recommend([[1, 'x']], k=10)
  with pytest.raises(RequestError, match='at most 10'):
    retriever.recommend([[1, 2]], k=11)
  with pytest.raises(RequestError, match='k must be a positive integer'):
    retriever.recommend([[1, 2]], k=0)


def test_load_imports_no_training_code(tiger_run, tmp_path):
  """A fresh process loads the export and recommends; nothing of training or the retriever code loads."""
  histories = _histories(5, tiger_run['retriever'].num_items, 20, seed=1)
  script = (
      'from deres_jax import serving\n'
      f'recs = serving.load({tiger_run["model_dir"]!r}).recommend({histories!r}, k=5)\n'
      'print(json.dumps([r.items.tolist() for r in recs]))\n')
  got = fresh_process.run(script, ('deres_jax.train', 'deres_jax.genrec', 'deres_jax.models', 'deres_jax.config',
                                   'flax', 'optax', 'orbax'))
  want = [r.items.tolist() for r in tiger_run['retriever'].recommend(histories, k=5)]
  assert got == want


def _post(url, body):
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  req = urllib.request.Request(url + '/recommend', data=data, headers={'Content-Type': 'application/json'},
                               method='POST')
  try:
    with urllib.request.urlopen(req, timeout=120) as r:
      return r.status, json.loads(r.read())
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def test_server_answers_concurrent_requests_like_in_process_and_rejects_bad_ones(tiger_run):
  retriever = tiger_run['retriever']
  histories = _histories(24, retriever.num_items, retriever.max_len, seed=2)
  want = retriever.recommend(histories, k=10)
  options = serving_app.ServeOptions(max_batch=8, max_wait_ms=5, max_body_bytes=20_000, max_rows=32)
  with serving_app.background(retriever, options) as url:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:   # concurrent: the batcher merges them
      singles = list(pool.map(lambda h: _post(url, {'history': h, 'k': 10}), histories[:16]))
    for (status, body), rec in zip(singles, want):
      assert status == 200, body
      assert body['items'] == rec.items.tolist() and 'warning' not in body
      np.testing.assert_allclose(body['scores'], rec.scores, rtol=0, atol=1e-5)
    status, body = _post(url, [{'history': h, 'k': 5} for h in histories[16:]])   # a batch
    assert status == 200 and len(body['results']) == 8
    assert [r['items'] for r in body['results']] == [r.items[:5].tolist() for r in want[16:]]
    status, body = _post(url, {'history': [histories[0][-3:][0], 10 ** 9, -1] + histories[0][-2:], 'k': 10})
    assert status == 200 and body['unknown'] == 2 and '2 item ids not in the catalogue' in body['warning']
    for bad, code, text in [(b'{"history": [1,', 400, 'malformed JSON'), (b'"hello"', 400, 'expected a JSON object'),
                            ({'history': [1, 'a']}, 422, 'integers'), ({'k': 3}, 422, '"history"'),
                            ({'history': [1], 'colour': 1}, 422, 'unknown fields'),
                            ({'history': [1], 'k': 500}, 422, 'at most 10'),
                            ([{'history': [1]}] * 40, 413, 'limit of 32'),
                            ({'history': list(range(1, 5000))}, 413, 'larger than the limit')]:
      status, body = _post(url, bad)
      assert status == code and text in body['error'], (bad if len(str(bad)) < 80 else code, body)
    status, body = _post(url, {'history': histories[1]})   # still serving; k defaults to 10
    assert status == 200 and body['items'] == want[1].items.tolist()
    with urllib.request.urlopen(url + '/healthz', timeout=30) as r:
      health = json.loads(r.read())
    assert health['status'] == 'ok' and health['model'] == 'tiger' and health['beam_sizes'] == [10]
    assert 3 <= health['batches'] <= 19   # 16 singles in batches of <= 8, the batch of 8, 2 more


@pytest.fixture(scope='module')
def sasrec_run(tmp_path_factory):
  workdir = _train('beauty_sasrec', str(tmp_path_factory.mktemp('sasrec')))
  model_dir = str(tmp_path_factory.mktemp('sasrec_model') / 'model')
  restored = genrec_export.restore(workdir)
  genrec_export.export(workdir, model_dir, platforms=('cpu',), beam_sizes=(10, 50), restored=restored)
  return restored, exported.load(model_dir, batch_size=8)


def test_sasrec_exports_top_k_of_the_full_scores_and_serves(sasrec_run):
  restored, retriever = sasrec_run
  histories = _histories(8, retriever.num_items, retriever.max_len, seed=3)
  L = retriever.max_len
  hist = np.zeros((8, L), np.int32)
  for r, h in enumerate(histories):
    if h[-L:]:
      hist[r, L - len(h[-L:]):] = h[-L:]
  full = np.asarray(sasrec.last_scores(restored.task.model, restored.params, jnp.asarray(hist)))[:, 1:]
  for k in (7, 30):   # served by the K=10 and K=50 exports
    for rec, s in zip(retriever.recommend(histories, k=k), full):
      want = np.argsort(-s, kind='stable')[:k] + 1
      np.testing.assert_allclose(rec.scores, s[want - 1], rtol=0, atol=1e-5)
      assert len(rec.items) == k and set(rec.items.tolist()) <= set(np.flatnonzero(s >= s[want[-1] - 1] - 1e-5) + 1)
  with serving_app.background(retriever, serving_app.ServeOptions(max_batch=8)) as url:
    status, body = _post(url, {'history': histories[0], 'k': 7})
  assert status == 200 and body['items'] == retriever.recommend(histories[:1], k=7)[0].items.tolist()


def test_predict_file_of_histories_text_and_parquet(tiger_run, tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  from deres_jax.serving import predict_families  # pylint: disable=g-import-not-at-top
  retriever = tiger_run['retriever']
  histories = _histories(10, retriever.num_items, retriever.max_len, seed=4)
  want = retriever.recommend(histories, k=5)
  text = tmp_path / 'h.txt'
  text.write_text(''.join(' '.join(map(str, h)) + '\n' for h in histories[:4]) + '3 x 5\n' +
                  ''.join(','.join(map(str, h)) + '\n' for h in histories[4:]))
  pq.write_table(pa.table({'history': pa.array(histories, pa.list_(pa.int64()))}), tmp_path / 'h.parquet')
  for path, bad in ((text, 1), (tmp_path / 'h.parquet', 0)):
    out = tmp_path / 'recs.csv'
    stats = predict_families.recommend_file(retriever, str(path), str(out), k=5, log=lambda *_: None)
    assert stats['rows'] == 10 + bad and stats['bad_rows'] == bad
    lines = [l.split(',') for l in out.read_text().splitlines()[1:]]
    good = [l for l in lines if l[1]]
    assert [[int(v) for v in l[1].split()] for l in good] == [r.items.tolist() for r in want]
    assert [int(l[4]) for l in good] == [r.truncated for r in want]
  with pytest.raises(RequestError, match='row 5: the history is not a list'):
    predict_families.recommend_file(retriever, str(text), str(tmp_path / 'x.csv'), k=5, strict=True)
  assert not (tmp_path / 'x.csv').exists()
