"""Multi-scenario data by schema: your own CSV/Parquet, CVR on clicked rows, grouped splits,
rows routed to the shared path."""
import numpy as np
import pytest

from deres_jax import multiscenario
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import data as data_lib
from deres_jax.multiscenario import models, samples, synthetic
from deres_jax.train import trainer


def _write(path, n=600, seed=0, sep=';', header=True):
  """A made-up log: session, site (the scenario), user, item, price, clicked, bought."""
  rng = np.random.default_rng(seed)
  site = rng.choice(['web', 'app', 'mini'], n)
  user, item = rng.integers(0, 30, n), rng.integers(0, 40, n)
  sess = rng.integers(0, 120, n)
  logit = (user % 3 == 0) * 2.0 - 1.0 + (site == 'app') * (item % 2) * 1.5
  clk = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
  buy = clk * (rng.random(n) < 0.4)
  lines = ([sep.join(['sess', 'site', 'u', 'i', 'price', 'clk', 'buy'])] if header else [])
  lines += [sep.join(map(str, r)) for r in zip(sess, site, user, item, rng.gamma(2, 3, n).round(2),
                                               clk, buy)]
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def _data_config(path, **kw):
  c = config_lib.base_config()
  c.data.update(dict(dict(name='csv', format='', train_file=path, scenario_column='site',
                          label_columns=('clk', 'buy'), categorical_columns=('u', 'i', 'sess'),
                          dense_columns=('price',), sep=';', target='clk'), **kw))
  return c


def test_byo_csv_with_a_made_up_schema_trains(tmp_path):
  c = _data_config(_write(tmp_path / 'log.csv'))
  d = multiscenario.load(c.data)
  assert d.scenario_names == ('app', 'web', 'mini') and d.label_names == ('clk', 'buy')
  assert d.splits['train']['cat'].shape[1] == 3 and d.splits['train']['dense'].shape[1] == 1
  c.model = models.model_config('midpg', embed_dim=4, hidden=(8,))
  c.train.update(batch_size=64, num_steps=8, log_every=4)
  c.eval.update(every_steps=8, batch_size=128, restore_best=False)
  c.ckpt.every_steps = 8
  c.optim.learning_rate = c.optim.embed_learning_rate = 0.02
  out = trainer.train_and_evaluate(c, str(tmp_path / 'run'), dataset=d)
  assert out['steps'] == 8 and np.isfinite(out['test']['logloss'])
  # A file without a header: the names come from data.columns; a bad schema is one sentence.
  path = _write(tmp_path / 'nohead.csv', header=False)
  c2 = _data_config(path, header=False, columns=('sess', 'site', 'u', 'i', 'price', 'clk', 'buy'))
  assert len(multiscenario.load(c2.data).splits['train']['label']) > 400
  with pytest.raises(ValueError, match="no column"):
    multiscenario.load(_data_config(path, header=False, columns=('a', 'b')).data)
  with pytest.raises(ValueError, match='label_columns'):
    multiscenario.load(_data_config(path, label_columns=()).data)


def test_parquet_reads_like_the_csv(tmp_path):
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  csv_path = _write(tmp_path / 'log.csv')
  c = _data_config(csv_path)
  rows = [line.split(';') for line in open(csv_path).read().splitlines()]
  table = pa.table({name: [r[j] for r in rows[1:]] for j, name in enumerate(rows[0])})
  table = table.set_column(5, 'clk', pa.array([int(r[5]) for r in rows[1:]]))  # a typed label
  pq.write_table(table, tmp_path / 'log.parquet')
  a = multiscenario.load(c.data)
  b = multiscenario.load(_data_config(str(tmp_path / 'log.parquet')).data)
  for split in ('train', 'val', 'test'):
    for k in ('label', 'cat', 'dense', 'scenario'):
      np.testing.assert_array_equal(a.splits[split][k], b.splits[split][k])


def test_grouped_split_never_puts_one_group_in_two_splits(tmp_path):
  """With group_column='sess' no validation or test session was seen in training, so its
  session id is out of the training vocabulary (0); a row-level split leaks sessions."""
  path = _write(tmp_path / 'log.csv', n=1200)
  grouped = multiscenario.load(_data_config(path, group_column='sess').data)
  rows = multiscenario.load(_data_config(path).data)
  for split in ('val', 'test'):
    assert (grouped.splits[split]['cat'][:, 2] == 0).all()
    assert (rows.splits[split]['cat'][:, 2] > 0).mean() > 0.5   # the check can fail
  parts = samples.group_parts(np.array(['a', 'b', 'a', 'c', 'b', 'a']), 0, 2)
  assert parts[0] == parts[2] == parts[5] and parts[1] == parts[4]


def test_cvr_keeps_clicked_rows_only_in_every_split():
  d = synthetic.generate(synthetic.MultiScenarioSpec(num_train=3000, num_val=600, num_test=600))
  cvr = data_lib.apply_task(d, 'cvr')
  for name, split in d.splits.items():
    clicked = split['labels'][:, 0] > 0
    out = cvr.splits[name]
    assert len(out['label']) == clicked.sum() and (out['labels'][:, 0] == 1).all()
    np.testing.assert_array_equal(out['label'], split['labels'][clicked, 1])
    np.testing.assert_allclose(out['prob'], split['probs'][clicked, 1] / split['probs'][clicked, 0],
                               rtol=1e-5)
  ctcvr = data_lib.apply_task(d, 'ctcvr')
  np.testing.assert_array_equal(ctcvr.splits['test']['label'],
                                d.splits['test']['labels'].prod(1))
  with pytest.raises(ValueError, match='needs a click label and a conversion label'):
    data_lib.apply_task(data_lib.MultiScenarioData(d.schema, d.splits, ('rating', 'x'), 'x'), 'cvr')


def test_shared_path_fraction_hides_the_scenario_of_training_rows_only():
  d = synthetic.generate(synthetic.MultiScenarioSpec(num_train=4000, num_val=400, num_test=400))
  r = data_lib.route_to_shared(d, 0.1, seed=3)
  hidden = r.splits['train']['scenario'] == d.schema.num_scenarios
  assert 0.08 < hidden.mean() < 0.12 and r.notes['shared_path_rows'] == hidden.sum()
  np.testing.assert_array_equal(r.splits['train']['scenario'][~hidden],
                                d.splits['train']['scenario'][~hidden])
  np.testing.assert_array_equal(r.splits['val']['scenario'], d.splits['val']['scenario'])
  with pytest.raises(ValueError, match='shared_path_fraction'):
    data_lib.route_to_shared(d, 1.0)
