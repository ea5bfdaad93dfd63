"""Multi-scenario data: the synthetic generator's oracle, the CSV reader, per-scenario metrics."""
import os

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deres_jax.multiscenario import metrics, samples, synthetic
from deres_jax.train import metrics as ctr_metrics

DATA = os.path.join(os.path.dirname(__file__), 'data', 'multiscenario')


@pytest.fixture(scope='module')
def syn():
  return synthetic.generate(synthetic.MultiScenarioSpec(num_train=20_000, num_val=4000,
                                                        num_test=4000))


def test_synthetic_labels_scenarios_and_oracle(syn):
  tr = syn.splits['train']
  assert tr['labels'].shape == (20_000, 2) and syn.label_names == ('click', 'purchase')
  # purchase implies click (CTCVR), the target column is purchase, the oracle is calibrated.
  assert np.all(tr['labels'][:, 1] <= tr['labels'][:, 0])
  np.testing.assert_array_equal(tr['label'], tr['labels'][:, 1])
  assert abs(tr['label'].mean() - tr['prob'].mean()) < 0.01
  # Scenario sizes from large to tiny, the same shares in every split.
  counts = np.bincount(tr['scenario'])
  assert list(counts) == sorted(counts, reverse=True) and 200 <= counts[-1] <= 600
  # The oracle beats chance clearly in every scenario, the tiny one included.
  te = syn.splits['test']
  for s in range(4):
    rows = te['scenario'] == s
    assert ctr_metrics.auc(te['label'][rows], te['prob'][rows]) > 0.65


def test_synthetic_scenarios_differ_only_through_the_specific_share():
  """Reassigning rows to other scenarios leaves the true probabilities alone iff a_k = 0."""
  def split(share, shares):
    spec = synthetic.MultiScenarioSpec(num_train=3000, num_val=500, num_test=500, std_bias=0.0,
                                       specific_share=(share, share), scenario_shares=shares)
    return synthetic.generate(spec).splits['train']
  for share, same in ((0.0, True), (0.7, False)):
    a, b = split(share, (0.5, 0.5)), split(share, (0.2, 0.8))
    np.testing.assert_array_equal(a['cat'], b['cat'])           # the same feature rows
    assert (a['scenario'] != b['scenario']).any()               # in other scenarios
    assert np.allclose(a['probs'], b['probs']) == same


def test_douban_reader_real_domains_and_train_only_vocab():
  d = samples.load('douban', {'all': os.path.join(DATA, 'douban_sample.csv')})
  assert d.scenario_names == ('book', 'movie', 'music')
  total = sum(np.bincount(s['scenario'], minlength=3) for s in d.splits.values())
  assert list(total) == [364, 2299, 337]  # the README's domain counts
  assert sum(len(s['label']) for s in d.splits.values()) == 3000
  # Vocabularies come from the training rows: a val user never seen in training is OOV (0).
  train_users = set(d.splits['train']['cat'][:, 0])
  assert 0 not in train_users and (d.splits['val']['cat'][:, 0] == 0).any()


def test_aliccp_reader_two_labels_and_given_split():
  files = {s: os.path.join(DATA, f'ali_ccp_{s}_sample.csv') for s in ('train', 'val', 'test')}
  d = samples.load('aliccp', files)
  assert d.label_names == ('click', 'purchase') and d.target == 'purchase'
  assert list(d.splits['train']['labels'].sum(0)) == [7.0, 1.0]
  assert d.splits['train']['dense'].shape == (100, 8) and d.schema.num_scenarios == 3
  ctcvr = samples.load('aliccp', files, target='ctcvr').splits['train']['label']
  np.testing.assert_array_equal(ctcvr, d.splits['train']['labels'].prod(1))


def test_unseen_scenario_and_bad_rows_are_counted(tmp_path):
  head = 'user_id,item_id,rating,domain,living_place,join_time,time_bin\n'
  (tmp_path / 'tr.csv').write_text(head + '1,2,1,book,a,b,3\n2,3,0,movie,a,b,3\n1,3,x,book,a,b,3\n')
  (tmp_path / 'va.csv').write_text(head + '1,2,1,games,a,b,3\n1,2\n')
  (tmp_path / 'te.csv').write_text(head + '1,2,0,book,a,b,3\n')
  d = samples.load('douban', {'train': str(tmp_path / 'tr.csv'), 'val': str(tmp_path / 'va.csv'),
                              'test': str(tmp_path / 'te.csv')})
  assert d.notes['bad_rows'] == 2 and d.notes['unseen_scenario_rows']['val'] == 1
  assert d.splits['val']['scenario'][0] == d.schema.num_scenarios == 2
  with pytest.raises(ValueError, match='no column'):
    samples.load('aliccp', {'all': str(tmp_path / 'tr.csv')})


def test_per_scenario_auc_matches_sklearn(syn):
  te = syn.splits['test']
  rng = np.random.default_rng(0)
  logits = rng.normal(size=len(te['label'])) + 2 * te['prob']
  m = metrics.by_scenario(te['label'], logits, te['scenario'], syn.scenario_names)
  weighted = 0.0
  for s, name in enumerate(syn.scenario_names):
    rows = te['scenario'] == s
    ref = roc_auc_score(te['label'][rows], logits[rows])
    assert m['scenarios'][name]['auc'] == pytest.approx(ref, abs=1e-12)
    weighted += rows.sum() * ref
  assert m['auc'] == pytest.approx(roc_auc_score(te['label'], logits), abs=1e-12)
  assert m['wauc'] == pytest.approx(weighted / len(te['label']), abs=1e-12)


def test_aliexpress_countries_are_scenarios_and_test_splits_into_val(tmp_path):
  """The Tianchi layout AliExpress_<CC>/{train,test}.csv, built from the torch-rechub US sample."""
  for cc, rows in (('US', None), ('NL', 40)):
    os.makedirs(tmp_path / f'AliExpress_{cc}')
    for split in ('train', 'test'):
      lines = open(os.path.join(DATA, f'aliexpress_{split}_sample.csv')).read().splitlines()
      if cc == 'NL':
        lines = lines[:1 + (rows if split == 'train' else 10)]
        lines.append('1,2,3')  # a truncated row: skipped and counted
      (tmp_path / f'AliExpress_{cc}' / f'{split}.csv').write_text('\n'.join(lines) + '\n')
  d = samples.load_aliexpress(str(tmp_path), ('US', 'NL'))
  assert d.scenario_names == ('NL', 'US') and d.label_names == ('click', 'conversion')
  assert list(np.bincount(d.splits['train']['scenario'])) == [40, 100]
  assert d.notes['bad_rows'] == 2
  assert len(d.splits['val']['label']) + len(d.splits['test']['label']) == 30
  tr = d.splits['train']
  np.testing.assert_array_equal(tr['label'], tr['labels'][:, 1])       # target = conversion
  assert tr['cat'].shape == (140, 16) and tr['dense'].shape == (140, 63)
  sample = open(os.path.join(DATA, 'aliexpress_train_sample.csv')).read().splitlines()
  # the sample's 2 conversions (US), plus those among the 40 NL rows
  assert tr['label'].sum() == 2 + sum(line.split(',')[-1] == '1' for line in sample[1:41])
  with pytest.raises(FileNotFoundError, match='AliExpress_FR/train.csv is missing'):
    samples.load_aliexpress(str(tmp_path), ('US', 'FR'))
  with pytest.raises(ValueError, match='no scenario column'):
    samples.load('aliexpress', {'all': os.path.join(DATA, 'aliexpress_train_sample.csv')})
