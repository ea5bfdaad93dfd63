"""The multi-interest synthetic generator: deterministic, calibrated, and its logit as documented."""
import numpy as np

from deres_jax import data
from deres_jax.data import synthetic_interest as si
from deres_jax.train import metrics

SPEC = si.InterestSpec(seed=5, num_train=20_000, num_val=4000, num_test=4000, max_vocab=5000)


def test_deterministic_and_schema():
  s1, a = si.generate(SPEC)
  s2, b = si.generate(SPEC)
  assert s1 == s2 and len(s1.cat_names) == si.NUM_CAT and len(s1.dense_names) == si.NUM_DENSE
  np.testing.assert_array_equal(a['train']['cat'], b['train']['cat'])
  np.testing.assert_array_equal(a['test']['prob'], b['test']['prob'])
  tr = a['train']
  assert 0.17 < tr['label'].mean() < 0.23
  assert ((tr['cat'] >= 0) & (tr['cat'] < np.array(s1.vocab_sizes))).all()


def test_labels_follow_the_oracle_and_interactions_matter():
  _, splits = si.generate(SPEC)
  te = splits['test']
  assert metrics.auc(te['label'], te['prob']) > 0.75
  # Calibration: within probability quintiles the click rate matches the mean probability.
  q = np.quantile(te['prob'], np.linspace(0, 1, 6))
  for lo, hi in zip(q[:-1], q[1:]):
    m = (te['prob'] >= lo) & (te['prob'] <= hi)
    assert abs(te['label'][m].mean() - te['prob'][m].mean()) < 0.03


def test_logit_matches_a_row_by_row_transcription():
  """The documented formula written out per row (loops, no vectorisation) on a few rows."""
  truth = si._Truth(SPEC)  # pylint: disable=protected-access
  dense, cat = truth.sample_features(np.random.default_rng(0), 5)
  got = truth.logit(dense, cat)
  for n in range(5):
    parts = {}
    z = [0.0 if np.isnan(dense[n, d]) else (np.log1p(dense[n, d]) - truth.z_mean[d]) / truth.z_std[d]
         for d in range(si.NUM_DENSE)]
    parts['first'] = (sum(truth.w_dense_missing[d] if np.isnan(dense[n, d]) else z[d] * truth.w_dense[d]
                          for d in range(si.NUM_DENSE)) + sum(truth.w_cat[f][cat[n, f]] for f in range(si.NUM_CAT)))
    scores = []
    for k in range(SPEC.num_interests):
      u = sum(truth.a[f][cat[n, f], k] for f in truth.user)
      v = sum(truth.b[g][cat[n, g]] for g in truth.item)
      scores.append(float(u @ v))
    parts['interest'] = max(scores)
    parts['dense_cross'] = sum(z[d] * truth.s[f][cat[n, f]] for d, f in truth.cross)
    parts['parity'] = sum(truth.sign[f][cat[n, f]] * truth.sign[g][cat[n, g]] * truth.sign[h][cat[n, h]]
                          for f, g, h in truth.parity)
    want = truth.bias + sum(truth.scale[k] * parts[k] for k in parts)
    np.testing.assert_allclose(got[n], want, rtol=1e-9, atol=1e-9)


def test_loads_by_config_name(tiny_config):
  c = tiny_config
  c.data.name = 'synthetic_interest'
  ds = data.load(c.data)
  assert ds.splits['train']['cat'].shape == (c.data.num_train, si.NUM_CAT)
  assert max(ds.schema.vocab_sizes) == c.data.max_vocab
