"""The synthetic generator: deterministic, Criteo-shaped, with a calibrated oracle."""
import numpy as np

from deres_jax.data import iterator, synthetic
from deres_jax.train import metrics

SPEC = synthetic.SyntheticSpec(seed=3, num_train=20_000, num_val=5000, num_test=5000)


def test_deterministic_by_seed():
  s1, a = synthetic.generate(SPEC)
  s2, b = synthetic.generate(SPEC)
  assert s1 == s2
  for split in a:
    for col in a[split]:
      np.testing.assert_array_equal(a[split][col], b[split][col])
  _, c = synthetic.generate(synthetic.SyntheticSpec(seed=4, num_train=100, num_val=10, num_test=10))
  assert not np.array_equal(a['train']['cat'][:100], c['train']['cat'])


def test_schema_and_distribution():
  schema, splits = synthetic.generate(SPEC)
  assert len(schema.dense_names) == 13 and len(schema.cat_names) == 26
  assert min(schema.vocab_sizes) == 10 and max(schema.vocab_sizes) == 100_000
  tr = splits['train']
  assert 0.22 < tr['label'].mean() < 0.28                  # ~25% positives
  assert 0.0 < np.isnan(tr['dense']).mean() < 0.3          # some missing dense values
  assert ((tr['cat'] >= 0) & (tr['cat'] < np.array(schema.vocab_sizes))).all()
  # Zipf: in the largest field the most frequent id is far more common than the median one.
  big = int(np.argmax(schema.vocab_sizes))
  counts = np.bincount(tr['cat'][:, big])
  counts = np.sort(counts[counts > 0])[::-1]
  assert counts[0] > 50 * np.median(counts)


def test_labels_follow_the_oracle():
  _, splits = synthetic.generate(SPEC)
  for split in splits.values():
    p, y = split['prob'], split['label']
    # Calibration: within probability deciles the click rate matches the mean probability.
    edges = np.quantile(p, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p, side='right') - 1, 0, 9)
    for b in range(10):
      sel = bins == b
      se = np.sqrt(p[sel].mean() * (1 - p[sel].mean()) / sel.sum())
      assert abs(y[sel].mean() - p[sel].mean()) < 5 * se + 1e-3
    assert metrics.auc(y, p) > 0.75  # interactions make the oracle far from chance


def test_iterator_resumes_exactly():
  _, splits = synthetic.generate(synthetic.SyntheticSpec(num_train=1000, num_val=10, num_test=10))
  it = iterator.BatchIterator(splits['train'], 128, seed=1)
  full = [next(it)['cat'] for _ in range(20)]  # crosses epoch boundaries (7 batches/epoch)
  resumed = iterator.BatchIterator(splits['train'], 128, seed=1, position=11)
  for k in range(11, 20):
    np.testing.assert_array_equal(next(resumed)['cat'], full[k])
  # Two processes' halves make up the global batch.
  halves = [iterator.BatchIterator(splits['train'], 128, seed=1, position=3, process_index=i,
                                   process_count=2) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([next(h)['cat'] for h in halves]), full[3])


def test_eval_batches_cover_every_row_once():
  _, splits = synthetic.generate(synthetic.SyntheticSpec(num_train=10, num_val=1000, num_test=10))
  seen = []
  for batch, mask in iterator.eval_batches(splits['val'], 256):
    seen.append(batch['label'][mask > 0])
  np.testing.assert_array_equal(np.concatenate(seen), splits['val']['label'])


def test_synthetic_csv_matches_the_synthetic_csv_config(tmp_path):
  """benchmarks/make_synthetic_csv.py: the columns configs/synthetic_csv.py names, binary labels
  drawn from the written probabilities, empty fields for missing values, bad sizes refused."""
  import csv
  import os
  import sys

  import pytest

  from deres_jax import config as config_lib
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, root)
  from benchmarks import make_synthetic_csv  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'syn.csv')
  rate = make_synthetic_csv.write_csv(out, rows=3000, prob=True)
  with open(out) as f:
    rows = list(csv.DictReader(f))
  cfg = config_lib.load_file(os.path.join(root, 'configs', 'synthetic_csv.py'))
  assert list(rows[0]) == ['label', *cfg.data.csv_dense, *cfg.data.csv_categorical, 'prob']
  labels = np.array([float(r['label']) for r in rows])
  probs = np.array([float(r['prob']) for r in rows])
  assert set(labels) == {0.0, 1.0} and abs(labels.mean() - rate) < 1e-6
  assert abs(labels.mean() - probs.mean()) < 0.03          # labels are Bernoulli(prob)
  assert labels[probs > 0.5].mean() > labels[probs < 0.2].mean() + 0.3
  assert any(r[k] == '' for r in rows for k in cfg.data.csv_categorical)  # missing ids written empty
  assert not os.path.exists(out + '.tmp')
  with pytest.raises(ValueError, match='categorical'):
    make_synthetic_csv.write_csv(out, rows=100, categorical=27)
