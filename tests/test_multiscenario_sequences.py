"""Multi-scenario models read behaviour sequences (their pooled view) from the data to serving.

A schema with sequence fields builds every multi-scenario model with one more field per
history (its masked mean, models/tokenizer.py); padding changes nothing and a real history id
changes the logits. A tiny MI-DPG trains on a raw CSV with a scenario column and a history
column sharing the item column's vocabulary (train/val/test files), and its export scores the
raw test rows, histories as text or JSON lists, like the model on the loader's encoded split.
"""
import csv

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax import multiscenario
from deres_jax.data.schema import Schema
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import models
from deres_jax.serving import exported, features, from_workdir, multiscenario_export, predict_families
from deres_jax.train import trainer

L, S = 4, 2
SCHEMA = Schema(dense_names=('price',), cat_names=('user', 'item'), vocab_sizes=(7, 11), num_scenarios=S,
                seq_names=('hist',), seq_vocab_sizes=(11,), seq_shared=('item',), seq_len=L)
NO_SEQ = Schema(dense_names=('price',), cat_names=('user', 'item'), vocab_sizes=(7, 11), num_scenarios=S)


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  seq = rng.integers(1, 11, (n, 1, L))
  seq[:, :, :2] = -1                                   # two padded (left) positions per history
  return {'cat': jnp.asarray(np.stack([rng.integers(0, 7, n), rng.integers(0, 11, n)], 1), jnp.int32),
          'dense': jnp.asarray(rng.normal(size=(n, 1)), jnp.float32),
          'scenario': jnp.asarray(rng.integers(0, S, n), jnp.int32), 'seq': jnp.asarray(seq, jnp.int32)}


def _params(model, batch):
  """Random N(0, 0.3²) parameters (NumPy draws: no per-leaf jax.random kernel)."""
  shapes = flax.linen.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
  leaves, tree = jax.tree.flatten(shapes)
  rng = np.random.default_rng(1)
  return jax.tree.unflatten(tree, [jnp.asarray(rng.normal(size=x.shape) * 0.3, jnp.float32) for x in leaves])


@pytest.mark.parametrize('name', ['midpg', 'star'])
def test_histories_are_one_pooled_field_padding_changes_nothing(name):
  cfg = models.model_config(name, embed_dim=4, hidden=(8,))
  model = models.build(cfg, SCHEMA)
  assert model.seq_share == (1,) and model.vocab_sizes == (7, 11, 11)
  batch = _batch()
  params = _params(model, batch)
  # The input of the first layer is F * E wide, F = 1 dense + 2 categorical + 1 pooled history.
  first = params['params']['layer_0']['kernel'] if name == 'midpg' else params['params']['kernel_0']
  assert first.shape[0] == 4 * 4
  # The history shares the item field's rows: no table rows of its own.
  assert params['params']['tokenizer']['embedding'].shape[0] == 24   # 7 + 11 padded to a multiple of 8
  apply = jax.jit(lambda p, b: model.apply(p, b)[0])
  logits = np.asarray(apply(params, batch))
  seq = np.asarray(batch['seq'])
  other_pad = np.where(seq < 0, -7, seq)               # any negative id is padding
  np.testing.assert_array_equal(apply(params, dict(batch, seq=jnp.asarray(other_pad))), logits)
  swapped = seq[:, :, [0, 1, 3, 2]]                    # the pooled view is a mean: order-free
  np.testing.assert_allclose(apply(params, dict(batch, seq=jnp.asarray(swapped))), logits, rtol=1e-5, atol=1e-6)
  changed = seq.copy()
  changed[:, 0, -1] = np.where(seq[:, 0, -1] == 5, 6, 5)   # one real id of every history
  assert np.all(np.abs(np.asarray(apply(params, dict(batch, seq=jnp.asarray(changed)))) - logits) > 1e-6)
  with pytest.raises(ValueError, match="no 'seq' column"):
    model.apply(params, {k: v for k, v in batch.items() if k != 'seq'})


def test_every_model_counts_the_pooled_fields():
  """FLOPs per example: a history costs what one more categorical field costs."""
  one_more = Schema(dense_names=('price',), cat_names=('user', 'item', 'x'), vocab_sizes=(7, 11, 11),
                    num_scenarios=S)
  for name in models.MODELS:
    cfg = models.model_config(name, embed_dim=4, hidden=(8,))
    with_seq, plain, wider = (models.build(cfg, s) for s in (SCHEMA, NO_SEQ, one_more))
    assert with_seq.flops_per_example()['total'] == wider.flops_per_example()['total'], name
    assert with_seq.flops_per_example()['total'] > plain.flops_per_example()['total'], name


def _write(path, n, seed):
  """A made-up log: site (the scenario), user, item, price, hist (items seen before), clk, buy."""
  rng = np.random.default_rng(seed)
  lines = [','.join(['site', 'u', 'i', 'price', 'hist', 'clk', 'buy'])]
  for _ in range(n):
    hist = [f'i{x}' for x in rng.integers(0, 25, rng.integers(0, 7))]   # 0..6 items: some longer than L
    item = str(rng.choice(hist[-L:])) if hist and rng.random() < 0.5 else f'i{rng.integers(0, 25)}'
    clk = int(rng.random() < (0.8 if item in hist[-L:] else 0.2))
    lines.append(','.join([str(rng.choice(['web', 'app'])), f'u{rng.integers(0, 10)}', item,
                           f'{rng.gamma(2, 3):.2f}', '|'.join(hist), str(clk), str(clk * int(rng.random() < 0.5))]))
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp('ms_seq')
  files = {k: _write(root / f'{k}.csv', n, seed) for k, n, seed in (('train', 400, 0), ('val', 80, 1),
                                                                    ('test', 80, 2))}
  c = config_lib.base_config()
  c.data.update(name='csv', format='', train_file=files['train'], val_file=files['val'], test_file=files['test'],
                scenario_column='site', label_columns=('clk', 'buy'), target='clk', categorical_columns=('u', 'i'),
                dense_columns=('price',), sequence_columns=('hist',), seq_shared=('i',), seq_max_len=L)
  c.model = models.model_config('midpg', embed_dim=4, hidden=(8,))
  c.train.update(batch_size=64, num_steps=6, log_every=3)
  c.eval.update(every_steps=6, batch_size=128, restore_best=False)
  c.ckpt.every_steps = 6
  c.optim.learning_rate = c.optim.embed_learning_rate = 0.02
  workdir = str(root / 'run')
  out = trainer.train_and_evaluate(c, workdir)
  model_dir = str(root / 'model')
  manifest = multiscenario_export.export(workdir, model_dir, platforms=('cpu',))
  with open(files['test'], newline='') as f:
    raw = list(csv.DictReader(f))
  return {'config': c, 'out': out, 'files': files, 'ds': multiscenario.load(c.data), 'workdir': workdir,
          'manifest': manifest, 'restored': multiscenario_export.restore(workdir), 'raw': raw,
          'scorer': exported.load(model_dir, batch_size=64)}


def test_loader_encodes_histories_with_the_item_vocabulary_and_trains(run, tmp_path):
  ds, out = run['ds'], run['out']
  assert ds.schema.seq_names == ('hist',) and ds.schema.seq_shared == ('i',) and ds.schema.seq_len == L
  assert ds.schema.seq_vocab_sizes == (ds.schema.vocab_sizes[1],)
  item_id = {v: k + 1 for k, v in enumerate(ds.vocab['i'])}
  for split, path in run['files'].items():
    with open(path, newline='') as f:
      hists = [r['hist'].split('|') if r['hist'] else [] for r in csv.DictReader(f)]
    seq = ds.splits[split]['seq']
    assert seq.shape == (len(hists), 1, L)
    want = [[-1] * (L - len(h[-L:])) + [item_id.get(x, 0) for x in h[-L:]] for h in hists]
    np.testing.assert_array_equal(seq[:, 0], want)   # the most recent L, left-padded; unseen items 0
  assert out['steps'] == 6 and np.isfinite(out['test']['logloss'])
  # Parquet list columns read like the CSV's text; a list with an empty element is a bad row.
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  with open(run['files']['train'], newline='') as f:
    rows = list(csv.DictReader(f))
  table = pa.table({k: [r[k] for r in rows] for k in rows[0]})
  table = table.set_column(4, 'hist', pa.array([r['hist'].split('|') if r['hist'] else [] for r in rows]))
  pq.write_table(table, tmp_path / 'train.parquet')
  c = run['config']
  ds_pq = multiscenario.load(_with(c, train_file=str(tmp_path / 'train.parquet')).data)
  np.testing.assert_array_equal(ds_pq.splits['train']['seq'], ds.splits['train']['seq'])
  bad = tmp_path / 'bad.csv'
  bad.write_text(open(run['files']['train']).read() + 'web,u1,i1,1.0,i1||i2,1,0\n')
  ds_bad = multiscenario.load(_with(c, train_file=str(bad)).data)
  assert ds_bad.notes['bad_rows'] == 1 and len(ds_bad.splits['train']['label']) == 400
  with pytest.raises(ValueError, match='not categorical columns'):
    multiscenario.load(_with(c, seq_shared=('price',)).data)


def _with(config, **data):
  c = config_lib.base_config()
  c.data.update(dict(config.data.items(), **data))
  return c


def _reference(r, split, seq=None):
  """Probabilities of the restored model on the loader's encoded split (its 'seq' replaced)."""
  batch = {k: np.array(split[k]) for k in ('cat', 'dense', 'scenario', 'seq')}
  if seq is not None:
    batch['seq'] = seq
  logits = jax.jit(from_workdir.apply_fn(r.model, r.step, r.variables))(r.params, batch)
  return 1 / (1 + np.exp(-np.asarray(logits, np.float64)))


def test_export_scores_raw_rows_with_histories_like_the_model(run, tmp_path):
  r, scorer, raw, test = run['restored'], run['scorer'], run['raw'], run['ds'].splits['test']
  m = run['manifest']
  assert m['sequences'] == [{'name': 'hist', 'max_len': L, 'sep': '|', 'padding': 'left', 'pad_id': -1,
                             'shares': 'i', 'vocab': 'i'}]
  want = _reference(r, test)
  probs, unseen, oov = scorer.score_rows(raw)                      # histories as the CSV's text
  np.testing.assert_allclose(probs, want, rtol=0, atol=1e-6)
  assert unseen == 0 and len(oov) == 3
  as_lists = [dict(row, hist=row['hist'].split('|') if row['hist'] else []) for row in raw]
  np.testing.assert_allclose(scorer.score_rows(as_lists)[0], want, rtol=0, atol=1e-6)
  # The history is read: an unseen element gets the OOV id 0 (counted), and changes the score.
  rows = [dict(row, hist='zzz') for row in raw[:8]]
  probs, _, oov = scorer.score_rows(rows)
  seq = np.full((8, 1, L), -1, np.int32)
  seq[:, 0, -1] = 0
  np.testing.assert_allclose(probs, _reference(r, {k: v[:8] for k, v in test.items()}, seq), rtol=0, atol=1e-6)
  assert oov[-1] == 8 and np.abs(probs - want[:8]).max() > 1e-4
  with pytest.raises(features.SchemaError, match='empty element'):
    scorer.score_rows([dict(raw[0], hist='i1||i2')])
  with pytest.raises(features.SchemaError, match="lacks the fields \\['hist'\\]"):
    scorer.score_rows([{k: v for k, v in raw[0].items() if k != 'hist'}])
  # launch/predict.py on the test file, exported and in process: the same scores.
  for s in (scorer, multiscenario_export.in_process(run['workdir'], 64)):
    stats = predict_families.score_scenario_file(s, run['files']['test'], str(tmp_path / 'out.csv'),
                                                 log=lambda *_: None)
    got = [float(line.split(',')[1]) for line in (tmp_path / 'out.csv').read_text().splitlines()[1:]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert stats['rows'] == len(raw) and len(stats['oov']) == 3
