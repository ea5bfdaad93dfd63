"""config.optim.embed_l2: the BARS/FuxiCTR penalty, against a direct NumPy computation."""
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from deres_jax import models
from deres_jax.data.schema import Schema
from deres_jax.train import regularization
from deres_jax.train.step import create_state, make_steps
from deres_jax.train.trainer import make_mesh

VOCAB = (5, 7, 3)
SCHEMA = Schema(dense_names=('I1', 'I2'), cat_names=('C1', 'C2', 'C3'), vocab_sizes=VOCAB)


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  cat = rng.integers(0, 4, (n, 3)).astype(np.int32)
  cat[0, 1] = 99  # out of vocabulary: the field's OOV row 0
  dense = rng.normal(size=(n, 2)).astype(np.float32)
  return {'cat': cat, 'dense': dense, 'label': (rng.random(n) < 0.3).astype(np.float32)}


def _model(name):
  cfg = models.model_config(name)
  if name == 'transformer':
    cfg.update(width=8, num_heads=2, embed_dim=4, head_hidden=(8,), tokenizer='group', num_tokens=2)
  return models.build(cfg, SCHEMA)


def _numpy_penalty(params, coeff, rows, cat):
  """The documented penalty, written out: tokenizer tables and numeric embeddings."""
  flat = {'/'.join(str(k.key) for k in p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(params)}
  total = 0.0
  for path, w in flat.items():
    name = path.split('/')[-1]
    if name == 'embedding' and rows == 'batch':
      offsets = np.concatenate([[0], np.cumsum(VOCAB)[:-1]])
      ids = np.where(cat >= np.array(VOCAB), 0, cat) + offsets
      total += sum(float(np.sum(w[r] ** 2)) for r in np.unique(ids))
    elif name in ('embedding', 'dense_scale', 'dense_bias', 'dense_missing', 'dense_weight'):
      total += float(np.sum(w.astype(np.float64) ** 2))
  return coeff / 2 * total


@pytest.mark.parametrize('rows', ['table', 'batch'])
@pytest.mark.parametrize('name', ['transformer', 'logreg'])
def test_penalty_matches_numpy(name, rows):
  model = _model(name)
  batch = _batch()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)['params'])
  if name == 'logreg':  # zeros at init: give the weights values
    params = jax.tree.map(lambda x: x + 0.1 * np.arange(x.size).reshape(x.shape) / x.size, params)
  got = regularization.embed_penalty(params, 1e-3, rows, batch['cat'], VOCAB)
  want = _numpy_penalty(params, 1e-3, rows, batch['cat'])
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  if rows == 'batch':  # fewer rows than the whole table
    full = regularization.embed_penalty(params, 1e-3, 'table', batch['cat'], VOCAB)
    assert float(got) < float(full)


def test_train_step_adds_and_logs_the_penalty():
  model = _model('transformer')
  batch = _batch(n=16)
  mesh = make_mesh((('data', -1), ('model', 1)))
  tx = optax.sgd(0.0)  # parameters stay put: the logged penalty is that of the init
  state, shardings = create_state(model, tx, mesh, (('vocab', None),), batch, seed=0)
  params = jax.device_get(state['params'])
  step, _ = make_steps(model, tx, mesh, shardings, embed_l2=1e-2, embed_l2_rows='batch')
  _, m = step(state, batch)
  want = _numpy_penalty(params, 1e-2, 'batch', batch['cat'])
  np.testing.assert_allclose(float(m['train/loss/embed_l2']), want, rtol=1e-5)
  np.testing.assert_allclose(float(m['train/total_loss']), float(m['train/loss']) + want, rtol=1e-5)


def test_embed_l2_prior_is_the_penalty_divided_by_the_training_rows(tiny_config, tmp_path):
  """optim.embed_l2_prior: lambda = prior / N, logged in the summary and in the loss; both set is
  one clear error."""
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import data  # pylint: disable=g-import-not-at-top
  from deres_jax.train import metric_writer, trainer  # pylint: disable=g-import-not-at-top
  c = tiny_config
  c.train.update(num_steps=3, log_every=1)
  c.eval.every_steps = 3
  c.ckpt.every_steps = 0
  c.optim.update(embed_l2=0.0, embed_l2_prior=40.0)
  ds = data.load(c.data)
  n = len(ds.splits['train']['label'])
  s = trainer.train_and_evaluate(c, str(tmp_path / 'a'), dataset=ds)
  assert s['embed_l2'] == pytest.approx(40.0 / n)
  rows = [r for r in metric_writer.read(str(tmp_path / 'a' / 'metrics.jsonl')) if 'train/loss/embed_l2' in r]
  assert rows and all(r['train/loss/embed_l2'] > 0 for r in rows)
  assert regularization.effective_embed_l2(c.optim, 2 * n) == pytest.approx(20.0 / n)  # halves with 2N
  c.optim.embed_l2 = 1e-5
  with pytest.raises(config_lib.ConfigError, match='not both'):
    config_lib.validate(c)


def test_the_shipped_configs_set_the_embedding_l2_from_a_prior():
  """The user-facing recipes regularise the embeddings by a prior (a valid config each), and the
  committed Amazon CTR table keeps the fixed 1e-6 it was measured with."""
  import os  # pylint: disable=g-import-not-at-top
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.multiscenario import config as ms_config  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def load(*path, arg=None):
    return config_lib.load_file(os.path.join(root, 'configs', *path), arg)

  for name in ('amazon_beauty.py', 'amazon_sports.py', 'amazon_toys.py'):
    c = load(name, arg='dnn')
    assert c.optim.embed_l2 == 0 and c.optim.embed_l2_prior == 1600, name
    assert regularization.effective_embed_l2(c.optim, 262_826) == pytest.approx(1600 / 262_826)
  assert load('byo_csv.py').optim.embed_l2_prior == 25
  for name in ('byo_csv.py', 'amazon.py'):
    c = ms_config.validate(load('multiscenario', name))
    assert c.optim.embed_l2_prior == 100 and c.train.num_epochs > 1 and c.eval.restore_best, name
  table = config_lib.load_table(os.path.join(root, 'configs', 'tables', 'amazon_ctr.py'))
  t = table.base_config('beauty', '/nonexistent')
  assert t.optim.embed_l2 == 1e-6 and t.optim.embed_l2_prior == 0
