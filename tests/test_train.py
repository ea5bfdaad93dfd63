"""The training loop: sharding invariance, exact resume, learning, config errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deres_jax import config as config_lib
from deres_jax import data
from deres_jax.train import metric_writer, report, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _losses(workdir):
  return {r['step']: r['train/loss'] for r in metric_writer.read(os.path.join(workdir, 'metrics.jsonl'))
          if 'train/loss' in r}


def test_short_run_beats_logistic_regression_near_the_oracle(tmp_path):
  """On interaction-heavy synthetic data DeRes must beat LR and approach the oracle.

  Margins stated here: at least +0.01 AUC over logistic regression, and within 0.20 AUC of
  the Bayes-optimal oracle (300 steps of 1024 rows cannot learn every interaction).
  """
  c = config_lib.base_config()
  c.data.update(num_train=150_000, num_val=20_000, num_test=20_000, max_vocab=300,
                std_first=0.3, std_pair=1.2)
  c.model.update(depth=2, width=32, num_heads=4, embed_dim=16, ffn_mult=2, head_hidden=(64,),
                 tokenizer='group', num_tokens=4, block_size=2)
  c.train.update(batch_size=1024, num_steps=300, log_every=50, progress=False)
  c.optim.update(learning_rate=3e-3, embed_learning_rate=3e-3)
  c.eval.update(every_steps=100, batch_size=4096)
  c.ckpt.every_steps = 0
  ds = data.load(c.data)
  model = trainer.train_and_evaluate(c, str(tmp_path / 'deres'), dataset=ds)
  lr = trainer.train_and_evaluate(report.logreg_config(c), str(tmp_path / 'lr'), dataset=ds)
  assert model['oracle_auc'] > 0.8
  assert model['test_auc'] > lr['test_auc'] + 0.01, (model['test_auc'], lr['test_auc'])
  assert model['oracle_auc'] - model['test_auc'] < 0.20, (model['test_auc'], model['oracle_auc'])
  with open(tmp_path / 'deres' / 'summary.json') as f:
    summary = json.load(f)
  for key in ('test_auc', 'test_logloss', 'oracle_auc', 'oracle_logloss', 'steps',
              'train_seconds', 'examples_per_second'):
    assert summary[key] is not None, key


def test_unknown_config_key_is_named():
  c = config_lib.base_config()
  c.model.depht = 3
  with pytest.raises(config_lib.ConfigError,
                     match=r"model 'transformer' has no field 'depht'. Did you mean 'depth'"):
    config_lib.validate(c)


def test_cli_override_and_unknown_key(tmp_path):
  env = dict(os.environ, XLA_FLAGS=os.environ.get('DERES_TEST_XLA_FLAGS', ''), JAX_PLATFORMS='cpu')
  cmd = [sys.executable, os.path.join(ROOT, 'launch', 'train.py'),
         f'--config={os.path.join(ROOT, "configs", "quickstart.py")}', f'--workdir={tmp_path}']
  bad = subprocess.run(cmd + ['--config.model.depht=8'], capture_output=True, text=True, env=env,
                       timeout=120)
  assert bad.returncode != 0
  assert 'depht' in bad.stderr and 'Traceback' not in bad.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')  # failed before anything ran
  wrong = subprocess.run(cmd + ['--config.model.block_size=64'], capture_output=True, text=True,
                         env=env, timeout=120)
  assert wrong.returncode == 2
  assert 'block_size=64 is larger than the 4 connected units' in wrong.stderr


def test_batch_larger_than_the_training_split_is_one_clear_error(tiny_config, tmp_path):
  c = tiny_config
  c.data.num_train = 200
  with pytest.raises(config_lib.ConfigError, match=r'batch_size=256 is larger than the training '
                                                   r'split \(200 rows\)'):
    trainer.train_and_evaluate(c, str(tmp_path))


def test_epochs_and_reduce_on_plateau(tiny_config, tmp_path):
  """train.num_epochs / eval.every_epochs set the steps; a plateau scales both rates, resumably."""
  c = tiny_config
  c.train.num_epochs, c.eval.every_epochs = 1.5, 0.5   # 4096 rows / 256 = 16 steps per epoch
  c.optim.plateau_factor = 0.5
  c.ckpt.every_steps = 8
  c.eval.restore_best = False
  ds = data.load(c.data)
  # A validation split of one class: its AUC is undefined (NaN), so no evaluation improves on
  # the best and every one is a plateau, whatever the machine's float rounding does to training.
  ds.splits['val'] = dict(ds.splits['val'], label=np.zeros_like(ds.splits['val']['label']))
  s = trainer.train_and_evaluate(c, str(tmp_path / 'a'), dataset=ds)
  assert s['steps'] == 24 and s['epochs'] == 1.5
  evals = [r['step'] for r in metric_writer.read(str(tmp_path / 'a' / 'metrics.jsonl')) if 'eval/auc' in r]
  assert evals == [8, 16, 24]
  assert s['lr_reductions'] == 3
  # Interrupted after step 16 and resumed: the reduced rates come back with the state.
  c16 = config_lib.base_config()
  c16.update(c.to_dict())
  c16.train.num_epochs = 1.0
  trainer.train_and_evaluate(c16, str(tmp_path / 'b'), dataset=ds)
  r = trainer.train_and_evaluate(c, str(tmp_path / 'b'), dataset=ds)
  a, b = _losses(tmp_path / 'a'), _losses(tmp_path / 'b')
  assert a[24] == b[24] and r['test_auc'] == s['test_auc']
