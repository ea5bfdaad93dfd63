"""The multi-scenario table's presets and paired comparison, and the Amazon multi-category CSV.

The `converged` preset must be a valid config that early-stops on validation wAUC and tests the
best-validation parameters; a tiny run with a zero learning rate (validation never improves)
stops after exactly `patience` validations past the first. The Amazon builder is checked on a
made-up two-category input (never the real files).
"""
import json
import os
import random
import sys

import jax
import numpy as np
import optax
import pytest

from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import load as load_data
from deres_jax.multiscenario import models
from deres_jax.multiscenario import table
from deres_jax.train import optim
from deres_jax.train import trainer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import make_amazon_flat_csv as amazon  # noqa: E402  pylint: disable=g-import-not-at-top


def test_converged_preset_is_valid_and_early_stops_on_wauc():
  c = config_lib.validate(table.table_config('midpg', 3, preset='converged'))
  assert c.seed == 3 and c.data.seed == 0                     # the seed changes init, not the data
  assert c.train.num_epochs > 1 and c.eval.every_epochs == 0.5
  assert c.eval.patience >= 2 and c.eval.restore_best and c.eval.monitor == 'wauc'
  assert c.optim.name == 'adam' and c.optim.weight_decay == 1e-5
  assert c.data.num_train > table.table_config('midpg', 0).data.num_train  # more rows than 'short'
  short = config_lib.validate(table.table_config('star', 0, preset='short'))
  assert short.train.num_steps == 176 and not short.train.num_epochs and not short.eval.restore_best
  for name in models.MODELS:  # every model of the table is a valid row at both presets
    config_lib.validate(table.table_config(name, 0, preset='converged'))
  with pytest.raises(ValueError, match='preset'):
    table.table_config('midpg', 0, preset='nope')


def test_early_stopping_is_wired(tmp_path):
  """lr 0: the first validation is the best and no later one beats it, so the run stops after
  1 + patience validations and reports the first as its best step."""
  c = table.table_config('shared_bottom', 0, preset='converged')
  c.data.update(num_train=1024, num_val=256, num_test=256)
  c.model.update(embed_dim=4, hidden=(8,))
  c.train.batch_size = 128                                    # 8 steps an epoch, validation every 4
  c.eval.update(patience=2, batch_size=256)
  c.optim.update(learning_rate=0.0, embed_learning_rate=0.0)
  s = trainer.train_and_evaluate(c, str(tmp_path / 'run'), dataset=load_data(c.data))
  assert s['stopped_early'] and s['best_step'] == 4 and s['steps'] == 12
  # The preset's embedding L2 comes from its prior and the training rows (100 / 1024).
  assert s['embed_l2'] > 0 and s['embed_l2'] == pytest.approx(table.PRESETS['converged']['embed_l2_prior'] / 1024)
  old = table.table_config('shared_bottom', 0, preset='converged_no_embed_l2')
  assert old.optim.embed_l2_prior == 0 and old.optim.embed_l2 == 0 and old.optim.weight_decay == 1e-5


def test_adam_weight_decay_is_l2_in_the_gradient():
  """optim.name='adam' with weight_decay λ is torch.optim.Adam's: Adam on g + λ w."""
  params = {'w': jax.numpy.array([1.0, -2.0])}
  grads = {'w': jax.numpy.array([0.5, 0.1])}
  cfg = config_lib.base_config().optim
  cfg.weight_decay = 0.1
  tx = optim.make_optimizer(cfg, 10)
  ours, _ = tx.update(grads, tx.init(params), params)
  ref = optax.adam(cfg.learning_rate)
  want, _ = ref.update({'w': grads['w'] + 0.1 * params['w']}, ref.init(params))
  np.testing.assert_allclose(ours['w'], want['w'], rtol=1e-6)


def test_paired_comparison():
  runs = {'midpg': {k: {'test': {'wauc': 0.70 + 0.01 * k}} for k in range(5)},
          'star': {k: {'test': {'wauc': 0.69 + 0.01 * k + 1e-4 * (k % 2)}} for k in range(5)},
          'ple': {k: {'test': {'wauc': 0.70 + 0.01 * k}} for k in range(3)}}
  mean, sd, n, p = table.paired(runs, 'midpg', 'star')
  assert n == 5 and mean == pytest.approx(0.01 - 0.4e-4) and sd > 0 and p < 1e-6
  mean, sd, n, p = table.paired(runs, 'midpg', 'ple')       # only the seeds both finished
  assert n == 3 and mean == pytest.approx(0.0, abs=1e-12)


def _write_category(src, name, seqs, attrs):
  with open(os.path.join(src, f'{name}.txt'), 'w') as f:
    f.writelines(' '.join([u] + s) + '\n' for u, s in seqs)
  with open(os.path.join(src, f'{name}_item2attributes.json'), 'w') as f:
    json.dump(attrs, f)


def test_amazon_multi_category_csv(tmp_path):
  """Two categories numbering users, items and attributes alike: prefixed ids never collide,
  every row names its category, and the CSV loads as a 2-scenario CTR task split by user."""
  rng = random.Random(1)
  for name in ('Beauty', 'Toys_and_Games'):      # the same raw ids in both categories
    seqs = [(str(u), [str(rng.randint(1, 30)) for _ in range(6)]) for u in range(1, 41)]
    _write_category(tmp_path, name, seqs, {str(i): [1, i % 3 + 2, 9] for i in range(1, 31)})
  rows = amazon.multi_category_rows(str(tmp_path), ['Beauty', 'Toys_and_Games'], user_fraction=0.5)
  assert {r[1] for r in rows} == {'Beauty', 'Toys_and_Games'}
  ids = {d: {v for r in rows if r[1] == d for v in r[2:] if v} for d in ('Beauty', 'Toys_and_Games')}
  assert all(v.startswith('B:') for v in ids['Beauty']) and all(v.startswith('TG:') for v in ids['Toys_and_Games'])
  assert not ids['Beauty'] & ids['Toys_and_Games']
  users = {d: {r[2] for r in rows if r[1] == d} for d in ids}
  assert len(users['Beauty']) == len(users['Toys_and_Games']) == 20   # half of each category's users
  assert sum(r[0] for r in rows) * 2 == len(rows)                     # one negative per positive
  path = tmp_path / 'ms.csv'
  with open(path, 'w') as f:
    f.write('click,domain,' + ','.join(amazon.FIELDS) + '\n')
    f.writelines(','.join(map(str, r)) + '\n' for r in rows)
  c = table.table_config('midpg', 0, preset='converged', data='amazon', data_path=str(path))
  config_lib.validate(c)
  d = load_data(c.data)
  assert d.target == 'ctr' and set(d.scenario_names) == {'Beauty', 'Toys_and_Games'}
  assert sum(len(s['label']) for s in d.splits.values()) == len(rows)


def test_holm_adjustment():
  """Holm: the i-th smallest p times (m - i + 1), made monotone; nan ignored."""
  np.testing.assert_allclose(table.holm([0.01, 0.04, float('nan'), 0.03]), [0.03, 0.06, np.nan, 0.06])
