"""launch/reproduce.py tables (deres_jax/train/paper_table.py): resume after a kill, failed rows."""
import json
import os
import types

import numpy as np
import pytest

from deres_jax import config as config_lib
from deres_jax.train import paper_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table():
  def row(connector):
    def edit(c):
      c.model.connector = connector
      return c
    return edit

  def bad(c):
    c.model.connector = 'hc'  # valid config; the stand-in trainer raises for it
    return c
  return types.SimpleNamespace(
      NAME='toy', TITLE='Toy table', BASELINE='prenorm',
      ROWS={'deres': row('deres'), 'prenorm': row('prenorm'), 'broken': bad,
            'attnres': row('attnres')},
      CLAIMS=[('deres beats prenorm', 'deres', ['prenorm']),
              ('deres beats broken', 'deres', ['broken'])],
      base_config=lambda data, path: config_lib.base_config(), budget=lambda c: '3 toy steps')


class Trainer:
  """Stands in for trainer.train_and_evaluate: writes summary.json like it; counts its calls."""

  def __init__(self, kill_at=None):
    self.calls, self.kill_at = [], kill_at

  def __call__(self, cfg, workdir, dataset=None, devices=None):
    self.calls.append((cfg.model.connector, cfg.seed))
    if len(self.calls) == self.kill_at:
      raise KeyboardInterrupt  # the process is killed in the middle of a row
    if cfg.model.connector == 'hc':
      raise RuntimeError('NaN loss at step 3')
    bonus = {'deres': 0.01, 'attnres': 0.005}.get(cfg.model.connector, 0.0)
    s = {'test_auc': 0.7 + bonus + 0.001 * cfg.seed, 'test_gauc': 0.68 + bonus, 'test_logloss': 0.5 - bonus,
         'test_tail_auc': 0.65 + bonus,
         'dense_params': 123, 'flops_per_example': 1000 + 10 * len(cfg.model.connector),
         'examples_per_second': 5000.0, 'oracle_auc': 0.8}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(s, f)
    return s


def test_table_resumes_after_a_kill_and_reports_a_failed_row(tmp_path):
  data = types.SimpleNamespace(source='toy', splits={k: {'label': np.zeros(10)}
                                                     for k in ('train', 'val', 'test')})
  out = str(tmp_path / 'results' / 'toy_synthetic.md')
  kw = dict(data='synthetic', seeds=2, workdir=str(tmp_path / 'wd'), out=out, dataset=data)
  first = Trainer(kill_at=3)
  with pytest.raises(KeyboardInterrupt):
    paper_table.run_table(_table(), train_fn=first, **kw)
  assert not os.path.exists(out)
  second = Trainer()
  rows = paper_table.run_table(_table(), train_fn=second, **kw)
  # Rows finished before the kill (deres and prenorm, seed 0) are read back, not retrained.
  assert ('deres', 0) not in second.calls and ('prenorm', 0) not in second.calls
  assert len(second.calls) == 8 - 2
  by = {r['row']: r for r in rows}
  assert by['broken']['status'] == 'failed' and 'NaN loss' in by['broken']['error']
  assert by['deres']['status'] == 'ok' and abs(by['deres']['gain_mean'] - 0.01) < 1e-9
  text = open(out).read()
  assert '| broken | failed |' in text and 'failed: RuntimeError: NaN loss at step 3' in text
  # deres: AUC 0.7105 vs prenorm 0.7005 (paired means): RelaImpr = (0.2105 / 0.2005 - 1) x 100 %.
  assert abs(by['deres']['relaimpr'] - (0.2105 / 0.2005 - 1) * 100) < 1e-6
  assert f"| {by['deres']['relaimpr']:+.2f} % |" in text and '| 0.6600 ± 0.0000 |' in text
  # A fresh checkout (no workdir) restores every finished run from the ledger beside the table;
  # only the failed row (never in the ledger) trains again.
  fourth = Trainer()
  rows = paper_table.run_table(_table(), train_fn=fourth, **dict(kw, workdir=str(tmp_path / 'fresh')))
  assert fourth.calls == [('hc', 0), ('hc', 1)] and os.path.exists(out[:-3] + '.runs.jsonl')
  assert {r['row']: r for r in rows}['deres']['auc_mean'] == by['deres']['auc_mean']
  assert '**deres beats prenorm** — holds' in text and 'deres beats broken** — not resolved' in text
  assert 'Budget: 3 toy steps' in text and os.path.exists(out[:-3] + '.csv')
  # A third run trains only the failed row again.
  third = Trainer()
  paper_table.run_table(_table(), train_fn=third, **kw)
  assert sorted(set(third.calls)) == [('hc', 0), ('hc', 1)]


def test_max_minutes_writes_a_partial_table_that_names_what_is_done(tmp_path):
  data = types.SimpleNamespace(source='toy', splits={k: {'label': np.zeros(10)}
                                                     for k in ('train', 'val', 'test')})
  out = str(tmp_path / 'toy.md')
  kw = dict(data='synthetic', workdir=str(tmp_path / 'wd'), out=out, dataset=data)
  paper_table.run_table(_table(), seeds=1, train_fn=Trainer(), **kw)   # seed 0 of every row
  idle = Trainer()
  rows = paper_table.run_table(_table(), seeds=2, train_fn=idle, max_minutes=-1, **kw)
  assert idle.calls == []   # < 0: nothing trains, the table is rewritten from finished runs
  by = {r['row']: r for r in rows}
  assert by['deres']['status'] == 'partial' and by['deres']['seeds_done'] == 1
  first = open(out).read().splitlines()[0]
  assert first.startswith('<!-- produced by: ') and 'PARTIAL: rows with every seed: 0 of 4' in first
  text = open(out).read()
  assert '| deres | 0.7100 ± 0.0000 | 0.6900 ± 0.0000 |' in text and '1 of 2 seeds (the rest not run yet)' in text


def test_paired_gain_and_verdict():
  mean, half = paper_table.paired_gain([0.71, 0.72, 0.73], [0.70, 0.71, 0.72])
  assert abs(mean - 0.01) < 1e-12 and half < 1e-9
  assert paper_table.verdict(mean, half) == 'holds'
  assert paper_table.verdict(-0.01, 0.001).startswith('does not hold')
  assert paper_table.verdict(0.01, 0.02).startswith('not resolved')


@pytest.mark.parametrize('name', ['main', 'ablation'])
def test_table_configs_validate_cover_the_issue_and_the_converged_preset(name):
  """Every row validates; --preset=converged trains every row to its validation optimum (epochs,
  early stopping, best-validation parameters), its budget line says so, and a preset the table
  does not have is a clear error. (Each row is validated once, under 'converged': the row edits
  do not depend on the preset except UniMixer's anneal, checked under both.)"""
  table = config_lib.load_table(os.path.join(ROOT, 'configs', 'tables', f'{name}.py'))
  assert table.PRESETS == ('short', 'converged')
  for row, edit in table.ROWS.items():
    c = edit(table.base_config('synthetic', '', 'converged'))
    config_lib.validate(c)
    assert c.train.num_epochs > 1 and c.eval.patience > 0 and c.eval.restore_best, row
    assert c.optim.plateau_factor > 0 and c.data.num_val >= 20_000 and c.ckpt.every_steps > 0, row
    if c.model.name == 'unimixer':  # the temperature anneal ends before early stopping can fire
      assert 0 < c.model.anneal_steps <= 2 * c.data.num_train / c.train.batch_size
      short = edit(table.base_config('synthetic', ''))
      config_lib.validate(short)
      assert short.model.anneal_steps == short.train.num_steps
  assert table.BASELINE in table.ROWS
  if name == 'main':  # DeRes and the twelve baselines (PreNorm/PostNorm counted as one)
    assert len(table.ROWS) == 14
  assert 'early stop after 3' in table.budget(table.base_config('synthetic', '', 'converged'))
  assert 'last-step parameters' in table.budget(table.base_config('synthetic', ''))
  with pytest.raises(ValueError, match="'long' is not a preset"):
    table.base_config('synthetic', '', 'long')
  with pytest.raises(ValueError, match='applies to --data=synthetic'):
    table.base_config('criteo', '/x', 'converged')
  with pytest.raises(ValueError, match='--data=criteo needs --data_path'):
    table.base_config('criteo', '')


def test_run_table_rejects_a_preset_the_table_lacks(tmp_path):
  with pytest.raises(ValueError, match='takes no preset'):
    paper_table.run_table(_table(), 'synthetic', 1, str(tmp_path), str(tmp_path / 't.md'),
                          train_fn=Trainer(), preset='converged')


def test_rows_trains_only_the_named_rows_and_the_table_lists_the_rest(tmp_path):
  data = types.SimpleNamespace(source='toy', splits={k: {'label': np.zeros(10)}
                                                     for k in ('train', 'val', 'test')})
  kw = dict(data='synthetic', seeds=2, workdir=str(tmp_path / 'wd'), out=str(tmp_path / 't.md'),
            dataset=data)
  first = Trainer()
  rows = paper_table.run_table(_table(), train_fn=first, rows='deres', **kw)
  assert sorted(first.calls) == [('deres', 0), ('deres', 1)]
  by = {r['row']: r for r in rows}
  assert by['deres']['status'] == 'ok' and by['prenorm']['status'] == 'partial'
  assert '| prenorm | not run yet |' in open(kw['out']).read()
  second = Trainer()
  paper_table.run_table(_table(), train_fn=second, **kw)   # the rest, deres read back
  assert ('deres', 0) not in second.calls and ('prenorm', 1) in second.calls
  with pytest.raises(ValueError, match=r"--rows: 'nope' is not a row of --table=toy; its rows: deres, "):
    paper_table.run_table(_table(), train_fn=Trainer(), rows='deres,nope', **kw)


def test_gains_pair_runs_by_seed_when_a_row_misses_one():
  """Seeds 0 and 2 of a row against seeds 0, 1, 2 of the baseline: pairs (0, 0) and (2, 2)."""
  row = [{'test_auc': 0.71, '_seed': 0}, {'test_auc': 0.75, '_seed': 2}]
  base = [{'test_auc': 0.70, '_seed': 0}, {'test_auc': 0.60, '_seed': 1}, {'test_auc': 0.74, '_seed': 2}]
  assert paper_table._paired_aucs(row, base) == ([0.71, 0.75], [0.70, 0.74])   # pylint: disable=protected-access


def test_paired_gain_uses_the_t_quantile_of_its_degrees_of_freedom():
  """15 seeds: 14 degrees of freedom, t = 2.1448 (printed tables), not the normal 1.96."""
  rng = np.random.default_rng(0)
  a, b = rng.normal(0.72, 0.003, 15), rng.normal(0.72, 0.003, 15)
  mean, half = paper_table.paired_gain(a, b)
  d = a - b
  assert mean == pytest.approx(d.mean())
  assert half == pytest.approx(2.1448 * d.std(ddof=1) / np.sqrt(15), rel=1e-4)
