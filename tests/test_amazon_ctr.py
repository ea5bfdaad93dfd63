"""The Amazon CTR builder (DIN protocol) on the 400-user Beauty sample of tests/data/genrec."""
import collections
import os

import numpy as np
import pytest

from deres_jax.data import amazon_ctr
from deres_jax.data import prepared

SAMPLE = os.path.join(os.path.dirname(__file__), 'data', 'genrec', 's3rec')


@pytest.fixture(scope='module')
def sample():
  users, cat, brand = amazon_ctr.read(os.path.join(SAMPLE, 'Beauty.txt'),
                                      os.path.join(SAMPLE, 'Beauty_item2attributes.json'))
  return users, cat, brand, amazon_ctr.build_rows(users, seed=3)


def test_protocol_splits_and_negatives(sample):
  users, _, _, rows = sample
  assert len(users) == 400
  train_pairs = {(u, i) for label, u, i, _ in rows['train'] if label}
  for split in ('val', 'test'):
    positives = collections.Counter(u for label, u, _, _ in rows[split] if label)
    assert set(positives) == set(users) and set(positives.values()) == {1}  # one per user
  for label, u, i, hist in rows['test']:
    if label:
      assert (u, i) not in train_pairs and i == users[u][-1] and hist == tuple(users[u][:-1])
  for split_rows in rows.values():
    labels = [r[0] for r in split_rows]
    assert labels[0::2] == [1] * (len(labels) // 2) and labels[1::2] == [0] * (len(labels) // 2)
    for (_, u, _, h_pos), (_, u_neg, neg, h_neg) in zip(split_rows[0::2], split_rows[1::2]):
      assert u_neg == u and h_neg == h_pos and neg not in users[u]  # never an item of the user
  n = sum(len(s) for s in users.values())
  assert sum(len(r) for r in rows.values()) == 2 * (n - len(users))  # every interaction but the first


def test_brand_and_category_by_position(sample):
  _, cat, brand, _ = sample
  # Item '1' of the sample has attributes [1, 2, 3]: 1 is never later than first place (a brand)
  # only if no item lists it after another attribute.
  attrs = __import__('json').load(open(os.path.join(SAMPLE, 'Beauty_item2attributes.json')))
  later = {a for v in attrs.values() for a in v[1:]}
  for item, v in attrs.items():
    assert brand.get(item) == (str(v[0]) if v[0] not in later else None)
    assert cat[item] == str([a for a in v if a in later or a != v[0]][-1])
    assert cat[item] != brand.get(item)


def test_prepared_histories_share_item_ids(tmp_path):
  summary = amazon_ctr.prepare('Beauty', str(tmp_path / 'amz'), source_dir=SAMPLE, max_len=5,
                               log=lambda *_: None)
  assert summary['bad_total'] == 0 and summary['rows']['val'] == summary['rows']['test'] == 800
  schema, splits, _ = prepared.load_splits(str(tmp_path / 'amz'))
  assert schema.cat_names == ('user_id', 'item_id', 'category', 'brand')
  assert schema.seq_names == ('hist_item_id', 'hist_category') and schema.seq_len == 5
  test = splits['test']
  # Each user's test history ends with its validation positive item (the most recent, at L-1).
  val = splits['val']
  val_item = {int(u): int(i) for u, i, y in zip(val['cat'][:, 0], val['cat'][:, 1], val['label']) if y}
  for u, seq, y in zip(test['cat'][:, 0], test['seq'], test['label']):
    assert seq[0, -1] == val_item[int(u)]
  # History categories are the categories of the history items (ids shared with 'category').
  train = splits['train']
  cat_of = dict(zip(train['cat'][:, 1].tolist(), train['cat'][:, 2].tolist()))
  seq = np.asarray(train['seq'][:500])
  for items, cats in zip(seq[:, 0], seq[:, 1]):
    for i, c in zip(items[items >= 0], cats[items >= 0]):
      if i in cat_of:
        assert cat_of[i] == c


def test_amazon_sample_trains_din_end_to_end_on_8_devices(tmp_path):
  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  from deres_jax.config import base_config  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'amz')
  amazon_ctr.prepare('Beauty', out, source_dir=SAMPLE, max_len=4, log=lambda *_: None)
  c = base_config()
  c.data.name, c.data.path = 'amazon', out
  c.model = models.model_config('din', embed_dim=4, att_hidden=(8,), hidden=(8,))
  c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.progress = 16, 3, 1, False
  c.eval.batch_size, c.eval.every_steps = 512, 3
  c.ckpt.every_steps = 0
  ds = data_lib.load(c.data)
  summary = trainer.train_and_evaluate(c, str(tmp_path / 'work'), dataset=ds)
  assert summary['steps'] == 3 and np.isfinite(summary['test_logloss'])
  assert summary['flops_per_example'] > 0


def test_sequences_drop_gives_the_same_rows_without_histories(tmp_path):
  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.config import base_config  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'amz')
  amazon_ctr.prepare('Beauty', out, source_dir=SAMPLE, max_len=4, log=lambda *_: None)
  c = base_config()
  c.data.name, c.data.path = 'amazon', out
  kept = data_lib.load(c.data)
  c.data.sequences = 'drop'
  blind = data_lib.load(c.data)
  assert kept.schema.seq_names and not blind.schema.seq_names and blind.schema.seq_len == 0
  assert blind.schema.cat_names == kept.schema.cat_names
  for name, split in blind.splits.items():
    assert 'seq' not in split and 'seq' in kept.splits[name]
    np.testing.assert_array_equal(split['cat'], kept.splits[name]['cat'])
    np.testing.assert_array_equal(split['label'], kept.splits[name]['label'])
  c.data.sequences = 'none'
  with pytest.raises(ValueError, match="config.data.sequences='none': choose 'keep' or 'drop'"):
    data_lib.load(c.data)
  # A dataset loaded once (paper tables share one across rows) follows each run's own setting.
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
  c.model = models.model_config('dnn', embed_dim=4, hidden=(8,))
  c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.progress = 16, 2, 1, False
  c.eval.batch_size, c.eval.every_steps, c.ckpt.every_steps = 512, 2, 0
  runs = {}
  for mode in ('keep', 'drop'):
    c.data.sequences = mode
    runs[mode] = trainer.train_and_evaluate(c, str(tmp_path / mode), dataset=kept)
  assert runs['drop']['dataset'].endswith('(sequence fields dropped)')
  assert runs['drop']['num_params'] < runs['keep']['num_params']   # two fewer pooled fields in the MLP
  from deres_jax.serving import from_workdir  # pylint: disable=g-import-not-at-top
  with pytest.raises(from_workdir.WorkdirError, match="sequences='drop'"):
    from_workdir.input_spec(c.data)   # serving such a run says so, not a shape error
