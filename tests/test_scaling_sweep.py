"""The scaling sweep (deres_jax/scaling/runs.py): its points, records, resume; report and plot."""
import io
import json
import os
import sys

import ml_collections
import numpy as np
import pytest

from deres_jax import config as config_lib
from deres_jax.scaling import fit, plot, report, runs
from deres_jax.train import trainer


def _scaling(**overrides):
  s = ml_collections.ConfigDict(dict(
      models='deres', depths=(1,), widths=(16,), seeds=(0,), scan_from_depth=16,
      reference='logreg', delta='relative', metric='test_auc', compute='train_flops',
      compute_unit=1e6, compute_unit_name='MFLOPs/example', num_bootstrap=50, bootstrap_seed=0,
      pairs='deres:onetrans'))
  s.update(overrides)
  return s


def test_points_grid_scan_and_shared_reference():
  s = _scaling(depths=(2, 16), widths=(16, 32), seeds=(0, 1), reference='onetrans depth=2 width=16')
  pts = runs.points(s, ['deres', 'onetrans'])
  assert len(pts) == 2 * 2 * 2 * 2  # the reference is a point of the sweep: no extra run
  by_name = {p['name']: p for p in pts}
  assert by_name['onetrans_depth2_width16_seed1']['role'] == 'sweep+reference'
  deep = by_name['deres_depth16_scan_layerstrue_width32_seed0']
  assert deep['overrides'] == {'model.name': 'transformer', 'model.connector': 'deres',
                               'model.depth': '16', 'model.width': '32',
                               'model.scan_layers': 'true', 'seed': '0'}
  assert 'model.scan_layers' not in by_name['deres_depth2_width16_seed0']['overrides']
  with pytest.raises(runs.ScalingError, match='unknown scaling model'):
    runs.points(s, ['nope'])


def test_sweep_resumes_without_rerunning_finished_points(tiny_config, tmp_path, monkeypatch):
  config = tiny_config
  config.train.num_steps = 4
  config.eval.every_steps = 4
  config.ckpt.every_steps = 4
  with config.unlocked():
    config.scaling = _scaling()
  calls = []

  def counting(cfg, workdir, dataset=None):
    calls.append(os.path.basename(workdir))
    return trainer.train_and_evaluate(cfg, workdir, dataset=dataset)

  out = io.StringIO()
  records = runs.run(config, str(tmp_path), ['deres'], train_fn=counting, out=out)
  assert calls == ['logreg_seed0', 'deres_depth1_width16_seed0']
  assert '[1/2] logreg_seed0: training in' in out.getvalue()  # the job runner's progress
  rec = {r['name']: r for r in records}['deres_depth1_width16_seed0']
  assert rec['depth'] == 1 and rec['width'] == 16 and rec['seed'] == 0 and rec['steps'] == 4
  assert rec['train_flops'] == 3 * rec['inference_flops'] > 0
  assert rec['train_flops_total'] == rec['train_flops'] * 4 * config.train.batch_size
  assert rec['params'] > rec['dense_params'] > 0 and 0.0 < rec['test_auc'] < 1.0
  assert rec['wall_seconds'] > 0 and rec['test_logloss'] > 0
  with open(tmp_path / 'records.json') as f:
    assert json.load(f) == records
  # Rerun: every point is finished, nothing trains, the same records come back.
  calls.clear()
  again = runs.run(config, str(tmp_path), ['deres'], train_fn=counting, out=io.StringIO())
  assert calls == [] and again == records
  # A changed training config would make points incomparable: refused before any training.
  config.train.num_steps = 5
  with pytest.raises(runs.ScalingError, match='config.train.num_steps was 4, now 5'):
    runs.run(config, str(tmp_path), ['deres'], train_fn=counting, out=io.StringIO())
  assert calls == []


def test_bad_point_fails_before_training(tiny_config, tmp_path):
  with tiny_config.unlocked():
    tiny_config.scaling = _scaling(widths=(15,))  # not divisible by num_heads=2
  with pytest.raises(config_lib.ConfigError, match='point deres_depth1_width15_seed0'):
    runs.run(tiny_config, str(tmp_path), ['deres'], train_fn=None, out=io.StringIO())
  assert not os.path.exists(tmp_path / 'scaling.json')


def _records():
  """Hand-made records: two models on exact power laws over a logreg reference."""
  recs = [{'name': f'logreg_seed{s}', 'variant': 'logreg', 'role': 'reference', 'seed': s,
           'depth': None, 'width': None, 'params': 10, 'dense_params': 1, 'inference_flops': 100,
           'train_flops': 300, 'test_auc': 0.70, 'test_logloss': 0.5, 'wall_seconds': 1.0}
          for s in (0, 1)]
  for variant, (a, gamma) in {'deres': (1.0, 0.2), 'onetrans': (1.0, 0.1)}.items():
    for depth in (1, 2, 4, 8):
      for s in (0, 1):
        c = 1e6 * depth
        recs.append({'name': f'{variant}_{depth}_{s}', 'variant': variant, 'role': 'sweep',
                     'seed': s, 'depth': depth, 'width': 16, 'params': 1000 * depth,
                     'dense_params': 100 * depth, 'inference_flops': c / 3, 'train_flops': c,
                     'test_auc': 0.70 * (1 + a * depth ** gamma / 100) + 1e-4 * (s - 0.5),
                     'test_logloss': 0.5, 'wall_seconds': 2.0})
  return recs


def test_report_fits_and_verdict_on_hand_made_records(tmp_path):
  config = ml_collections.ConfigDict({'scaling': _scaling(num_bootstrap=200),
                                      'train': {'num_steps': 4, 'batch_size': 8},
                                      'data': {'name': 'synthetic', 'num_train': 1, 'num_test': 1,
                                               'max_vocab': 10}})
  result = report.analyse(config, _records(), ['deres', 'onetrans'])
  assert result['fits']['deres']['gamma'] == pytest.approx(0.2, abs=2e-3)
  assert result['fits']['onetrans']['gamma'] == pytest.approx(0.1, abs=2e-3)
  assert result['sizes']['deres'] == [f'depth {d} width 16' for d in (1, 2, 4, 8)]
  # deres reaches onetrans's depth-8 gain (8^0.1) at C^0.2 = 8^0.1: C = sqrt(8), ρ = 8^-0.5.
  rows = fit.match(result['fits'], 'deres', 'onetrans')
  assert rows[-1]['ratio'] == pytest.approx(8 ** -0.5, rel=0.02)
  text = report.markdown(result, 'python launch/scaling.py ...', str(tmp_path / 'p'),
                         str(tmp_path / 'r.md'), 1.0)
  assert "Yes: deres's exponent is steeper than onetrans's here" in text
  assert '| deres → onetrans depth 8 width 16 |' in text and '![AUC against compute](p.png)' in text
  json.dumps(report.fit_json(result))  # JSON-ready
  assert 'Every point trains 4 steps × 8 rows = 32 examples' in text and 'One data budget' in text
  # An epoch budget (configs/scaling/synthetic.py:converged) says every point early-stopped.
  config.train.num_epochs = 12.0
  with config.unlocked():
    config.eval = {'patience': 3}
  text = report.markdown(report.analyse(config, _records(), ['deres', 'onetrans']), 'cmd', '',
                         str(tmp_path / 'r.md'), 1.0)
  assert 'Every point trains to its validation optimum: up to 12 epochs of 8 rows, early stop after 3' in text
  assert 'not undertrained at this budget' in text and 'One data budget' not in text


def test_partial_sweep_report_lists_missing_points_and_fits_only_what_is_finished(tmp_path):
  config = ml_collections.ConfigDict({'scaling': _scaling(), 'train': {'num_steps': 4, 'batch_size': 8},
                                      'data': {'name': 'synthetic', 'num_train': 1, 'num_test': 1,
                                               'max_vocab': 10}})
  recs = [r for r in _records() if r['variant'] != 'onetrans' and r['depth'] != 8]  # a sweep in progress
  recs += [r for r in _records() if r['variant'] == 'onetrans' and r['depth'] == 1]   # one size only
  expected = [{'name': r['name']} for r in _records()]
  result = report.analyse(config, recs, ['deres', 'onetrans'], expected=expected)
  assert list(result['fits']) == ['deres'] and result['pairs'] == []
  assert result['unfitted'] == {'onetrans': '1 finished size(s), a fit needs 2'}
  assert result['fits']['deres']['gamma'] == pytest.approx(0.2, abs=2e-3)  # exact law, 3 sizes
  assert sorted(result['missing']) == sorted(
      [f'deres_8_{s}' for s in (0, 1)] + [f'onetrans_{d}_{s}' for d in (2, 4, 8) for s in (0, 1)])
  text = report.markdown(result, 'python launch/scaling.py --x', '', str(tmp_path / 'r.md'), 1.0)
  first = text.splitlines()[0]
  assert first.startswith('<!-- produced by: python launch/scaling.py --x') and '10 of 18 points done' in first
  assert 'onetrans not fitted' in first and 'deres_8_0' in text
  assert report._point_ranges(['d_depth8_width16_seed0', 'd_depth8_width16_seed2', 'o_seed1']) == (
      'd_depth8_width16 (seeds 0, 2), o (seed 1)')
  assert 'has both models fitted yet.' in text
  # A finished sweep says nothing of the sort.
  done = report.markdown(report.analyse(config, _records(), ['deres', 'onetrans'], expected=expected),
                         'cmd', '', str(tmp_path / 'r.md'), 1.0)
  assert 'partial' not in done.splitlines()[0] and 'Partial sweep' not in done


def test_converged_scaling_config_is_an_epoch_budget_with_early_stopping():
  c = config_lib.load_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                        'configs', 'scaling', 'synthetic.py'), 'converged')
  point = ml_collections.ConfigDict({k: v for k, v in c.items() if k != 'scaling'})
  config_lib.validate(point)   # what the sweep trains (its points drop the scaling section)
  assert c.train.num_epochs > 1 and c.eval.patience > 0 and c.eval.restore_best
  assert 8 in c.scaling.depths and len(c.scaling.seeds) >= 3


def test_plot_writes_png_and_svg(tmp_path):
  pytest.importorskip('matplotlib')
  config = ml_collections.ConfigDict({'scaling': _scaling(), 'train': {'num_steps': 4,
                                      'batch_size': 8}, 'data': {'name': 'synthetic'}})
  result = report.analyse(config, _records(), ['deres', 'onetrans'])
  paths = plot.plot(result['fits'], result['curves'], result['ref_auc'], str(tmp_path / 'scaling'))
  for path in paths:
    assert os.path.getsize(path) > 1000
  with open(paths[1]) as f:
    assert '<svg' in f.read(2000)


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib -> ImportError
  with pytest.raises(ImportError, match=r"pip install -e '.\[plot\]'"):
    plot.plot({}, {}, 0.7, '/tmp/unused')
  assert np.isfinite(fit.delta_auc(0.71, 0.7))  # the fitter itself needs numpy only


def test_a_sweep_workdir_from_before_a_new_neutral_field_still_resumes(tiny_config, tmp_path):
  path = str(tmp_path / 'scaling.json')
  runs._check_spec(path, tiny_config)
  with open(path) as f:
    spec = json.load(f)
  del spec['base_config']['zoo_connector']             # written before the field existed
  with open(path, 'w') as f:
    json.dump(spec, f)
  runs._check_spec(path, tiny_config)                   # the field at its neutral value: same sweep
  tiny_config.zoo_connector = 'prenorm'
  with pytest.raises(runs.ScalingError, match='config.zoo_connector'):
    runs._check_spec(path, tiny_config)
