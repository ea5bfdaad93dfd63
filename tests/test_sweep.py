"""launch/sweep.py and deres_jax/train/sweep.py (docs/sweep.md): value syntax, grid and random
expansion, validation before any training, resume, sweep.json checks, results table, best config.

One test trains for real (2 trials of 4 steps of configs/tiny.py); the others replace
`train_and_evaluate` by a fake that writes a summary.json from the config, which is enough to
test what the sweep does around training.
"""
import json
import os
import subprocess
import sys

import jax
import pytest

from deres_jax import config as config_lib
from deres_jax import data
from deres_jax.train import sweep
from deres_jax.train import trainer
from deres_jax.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config_file(path):
  return load_file(path)


def _fake_train(calls):
  """A train_and_evaluate that writes a summary from the config: val AUC = learning rate."""
  def train(config, workdir, dataset=None):
    del dataset
    calls.append(workdir)
    lr = config.optim.learning_rate
    summary = {'val_auc': lr, 'val_logloss': 1 - lr, 'test_auc': lr, 'test_logloss': 1 - lr,
               'train_seconds': 1.0}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
    return summary
  return train


@pytest.fixture
def fake(monkeypatch):
  """Fake training and data loading; the list of trial workdirs trained."""
  calls = []
  monkeypatch.setattr(trainer, 'train_and_evaluate', _fake_train(calls))
  monkeypatch.setattr(data, 'load', lambda data_config: None)
  return calls


# ---------------------------------------------------------------- Pure functions.

def test_split_sweep_flags_and_value_syntax():
  argv = ['sweep.py', '--config=c.py', '--sweep.optim.learning_rate=1e-3,2e-3',
          '--sweep.model.head_hidden', '(256,),(512, 256)', '--config.train.num_steps=3',
          "--sweep.data.csv_files=('a,1.csv',);b.csv"]
  rest, axes = sweep.split_sweep_flags(argv)
  assert rest == ['sweep.py', '--config=c.py', '--config.train.num_steps=3']
  assert axes == [('optim.learning_rate', ['1e-3', '2e-3']),
                  ('model.head_hidden', ['(256,)', '(512, 256)']),
                  ('data.csv_files', ["('a,1.csv',)", 'b.csv'])]
  assert sweep.split_values("'a,b',c") == ["'a,b'", 'c']  # commas inside quotes do not split
  with pytest.raises(sweep.SweepError, match='more than once'):
    sweep.split_sweep_flags(['--sweep.seed=1,1'])
  with pytest.raises(sweep.SweepError, match='given twice'):
    sweep.split_sweep_flags(['--sweep.seed=1', '--sweep.seed=2'])
  with pytest.raises(sweep.SweepError, match=r'write --sweep.seed, not --sweep.config.seed'):
    sweep.split_sweep_flags(['--sweep.config.seed=1,2'])


def test_expand_grid_and_random():
  axes = [('a', ['1', '2']), ('b', ['x', 'y', 'z'])]
  grid = sweep.expand(axes)
  # The Cartesian product, the last axis varying fastest.
  assert grid == [{'a': a, 'b': b} for a in '12' for b in 'xyz']
  assert sweep.grid_size(axes) == 6
  drawn = sweep.expand(axes, 'random', num_trials=4, seed=3)
  assert len(drawn) == 4 and all(t in grid for t in drawn)
  assert len({tuple(t.values()) for t in drawn}) == 4  # distinct
  assert drawn == sweep.expand(axes, 'random', num_trials=4, seed=3)  # a function of the seed
  assert sorted(map(str, sweep.expand(axes, 'random', num_trials=6))) == sorted(map(str, grid))
  with pytest.raises(sweep.SweepError, match='num_trials <= 6'):
    sweep.expand(axes, 'random', num_trials=7)
  with pytest.raises(sweep.SweepError, match='is for --mode=random'):
    sweep.expand(axes, 'grid', num_trials=2)
  assert sweep.trial_name(3, {'a': '2e-3', 'b': '(512, 256)'}) == 'trial_003_2e-3_512-256'


def test_sort_rows_and_table_follow_the_monitor():
  def row(name, auc, logloss):
    return {'name': name, 'overrides': {'optim.learning_rate': name}, 'error': None,
            'summary': {'val_auc': auc, 'val_logloss': logloss, 'test_auc': auc,
                        'test_logloss': logloss, 'train_seconds': 2.0}}
  rows = [row('a', 0.70, 0.50), row('b', 0.80, 0.46), row('c', 0.75, 0.44),
          {'name': 'd', 'overrides': {'optim.learning_rate': 'd'}, 'summary': None,
           'error': 'non-finite loss'}]
  assert [r['name'] for r in sweep.sort_rows(rows, 'auc')] == ['b', 'c', 'a', 'd']
  assert [r['name'] for r in sweep.sort_rows(rows, 'logloss')] == ['c', 'b', 'a', 'd']
  table = sweep.results_table(rows, ['optim.learning_rate'], 'logloss')
  lines = table.splitlines()
  assert lines[0].startswith('| # | trial | optim.learning_rate | val AUC | val logloss |')
  assert [line.split(' | ')[1] for line in lines[2:6]] == ['c', 'b', 'a', 'd']
  assert '0.44000' in lines[2] and 'failed: non-finite loss' in lines[5]
  assert 'lower is better' in table


def test_trial_config_parses_like_train_py(tiny_config):
  c = sweep.trial_config(tiny_config, {'train.num_steps': '1e3', 'train.progress': 'true',
                                       'data.split': '(0.5, 0.25, 0.25)', 'model.head_hidden': '(8, 4)'})
  assert c.train.num_steps == 1000 and isinstance(c.train.num_steps, int)
  assert c.train.progress is True and c.data.split == (0.5, 0.25, 0.25)
  assert c.model.head_hidden == (8, 4) and tiny_config.model.head_hidden == (32,)  # base untouched
  # The model name switches the section first; --config.model.* flags apply to every trial.
  c = sweep.trial_config(tiny_config, {'model.name': 'dcnv2', 'model.num_cross': '2'},
                         model_flags=[('embed_dim', '4')])
  assert c.model.name == 'dcnv2' and c.model.num_cross == 2 and c.model.embed_dim == 4
  config_lib.validate(c)
  with pytest.raises(config_lib.ConfigError, match="Did you mean 'train.num_steps'"):
    sweep.trial_config(tiny_config, {'train.num_step': '3'})
  with pytest.raises(config_lib.ConfigError, match="has no field 'widht'. Did you mean 'width'"):
    sweep.trial_config(tiny_config, {'model.widht': '3'})


# ---------------------------------------------------------------- Sweeps.

def test_sweep_trains_resumes_and_writes_the_best_config(tiny_config, tmp_path, monkeypatch, capsys):
  tiny_config.train.update(num_steps=4, log_every=2)
  tiny_config.eval.every_steps = 2
  tiny_config.ckpt.every_steps = 2
  # Two seeds: the same compiled steps for both trials (the compilation cache of conftest.py).
  axes = [('seed', ['0', '1'])]
  rows = sweep.run(tiny_config, str(tmp_path), axes)
  out = capsys.readouterr().out
  assert '[1/2] seed=0: training in' in out and '[2/2] seed=1: done in' in out
  names = ['trial_000_0', 'trial_001_1']
  assert [r['name'] for r in rows] == names
  summaries = [json.load(open(tmp_path / n / 'summary.json')) for n in names]
  assert summaries[0]['val_auc'] != summaries[1]['val_auc']
  best = max(range(2), key=lambda i: summaries[i]['val_auc'])
  # results.md: best validation AUC first.
  lines = (tmp_path / 'results.md').read_text().splitlines()
  assert [line.split(' | ')[1] for line in lines[2:4]] == [names[best], names[1 - best]]
  assert f"{summaries[best]['val_auc']:.5f}" in lines[2]
  # best_config.py is a config file giving the best trial's config, every field.
  loaded = _load_config_file(str(tmp_path / 'best_config.py'))
  assert loaded.seed == best
  assert loaded.to_dict() == sweep.trial_config(tiny_config, {'seed': str(best)}).to_dict()
  assert json.load(open(tmp_path / 'best_config.json')) == json.loads(loaded.to_json())
  config_lib.validate(loaded, num_devices=jax.device_count())
  spec = json.load(open(tmp_path / 'sweep.json'))
  assert [t['overrides'] for t in spec['trials']] == [{'seed': '0'}, {'seed': '1'}]

  # Rerun: finished trials are not trained again.
  real_train, calls = trainer.train_and_evaluate, []

  def counting(config, workdir, dataset=None):
    calls.append(os.path.basename(workdir))
    return real_train(config, workdir, dataset=dataset)
  monkeypatch.setattr(trainer, 'train_and_evaluate', counting)
  mtimes = [os.path.getmtime(tmp_path / n / 'summary.json') for n in names]
  sweep.run(tiny_config, str(tmp_path), axes)
  assert calls == []
  assert [os.path.getmtime(tmp_path / n / 'summary.json') for n in names] == mtimes
  assert 'done before' in capsys.readouterr().out
  # A trial without summary.json (stopped after its last checkpoint) resumes from it.
  os.remove(tmp_path / names[1] / 'summary.json')
  sweep.run(tiny_config, str(tmp_path), axes)
  assert calls == [names[1]]
  assert 'Resuming from step 4' in capsys.readouterr().out
  again = json.load(open(tmp_path / names[1] / 'summary.json'))
  assert again['val_auc'] == summaries[1]['val_auc']


def test_invalid_value_fails_before_any_trial_trains(tiny_config, tmp_path, fake):
  axes = [('optim.learning_rate', ['1e-3', '2e-3']), ('model.width', ['16', '0'])]
  with pytest.raises(config_lib.ConfigError,
                     match=r'^trial 2/4 \(optim.learning_rate=1e-3, model.width=0\): '
                           r'config.model.width must be positive, got 0'):
    sweep.run(tiny_config, str(tmp_path), axes)
  axes = [('optim.learning_rate', ['1e-3', 'fast'])]
  with pytest.raises(config_lib.ConfigError, match="config.optim.learning_rate='fast' is not a float"):
    sweep.run(tiny_config, str(tmp_path), axes)
  assert fake == [] and os.listdir(tmp_path) == []


def test_sweep_json_of_another_sweep_is_a_clear_error(tiny_config, tmp_path, fake):
  axes = [('optim.learning_rate', ['0.1', '0.2'])]
  sweep.run(tiny_config, str(tmp_path), axes)
  assert len(fake) == 2
  with pytest.raises(sweep.SweepError, match=r'another sweep \(--sweep.optim.learning_rate was 0.1,0.2, '
                                             r'now 0.1,0.3\).*use a new --workdir'):
    sweep.run(tiny_config, str(tmp_path), [('optim.learning_rate', ['0.1', '0.3'])])
  tiny_config.train.num_steps = 7  # a different --config override
  with pytest.raises(sweep.SweepError, match='config.train.num_steps was 12, now 7'):
    sweep.run(tiny_config, str(tmp_path), axes)
  assert len(fake) == 2


def test_failed_trial_is_reported_and_retried_by_the_next_run(tiny_config, tmp_path, fake,
                                                               monkeypatch, capsys):
  train = trainer.train_and_evaluate
  diverges = [True]

  def diverging(config, workdir, dataset=None):
    if config.optim.learning_rate > 1 and diverges[0]:
      raise trainer.NonFiniteError('Non-finite loss or gradients at step 1.')
    return train(config, workdir, dataset)
  monkeypatch.setattr(trainer, 'train_and_evaluate', diverging)
  axes = [('optim.learning_rate', ['100', '0.5'])]
  rows = sweep.run(tiny_config, str(tmp_path), axes)
  assert rows[0]['error'] == 'NonFiniteError: Non-finite loss or gradients at step 1.'
  assert rows[1]['summary']['val_auc'] == 0.5
  assert (tmp_path / 'trial_000_100' / 'failed.json').exists()
  assert 'failed: NonFiniteError' in (tmp_path / 'results.md').read_text()
  assert 'trial_001_0.5' in (tmp_path / 'best_config.py').read_text()
  # The one failure policy of the job runner: the next run retries the failed trial only.
  diverges[0] = False
  capsys.readouterr()
  rows = sweep.run(tiny_config, str(tmp_path), axes)
  assert len(fake) == 2 and fake[-1].endswith('trial_000_100')
  assert rows[0]['summary']['val_auc'] == 100 and not (tmp_path / 'trial_000_100' / 'failed.json').exists()


def test_launcher_rejects_a_bad_value_in_one_line(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, 'launch', 'sweep.py'),
         f'--config={os.path.join(ROOT, "configs", "tiny.py")}', f'--workdir={tmp_path}',
         '--config.model.embed_dim=4', '--sweep.optim.learning_rate=1e-3,2e-3', '--sweep.model.width', '16,-8']
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert p.returncode == 2, p.stderr
  assert p.stderr.strip().splitlines()[-1] == (
      "error: trial 2/4 (optim.learning_rate=1e-3, model.width=-8): config.model.width must be "
      "positive, got -8 (model 'transformer').")
  assert os.listdir(tmp_path) == []
