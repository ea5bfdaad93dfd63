"""The one job runner (deres_jax/train/jobs.py) of paper tables, sweeps and scaling sweeps:
validate every job first, read finished jobs back, record and retry failed ones, time budget.
Each user of it (test_paper_table, test_sweep, test_scaling_sweep, test_genrec_table) checks
its own resume and failure handling on top."""
import io
import json
import os

import pytest

from deres_jax import config as config_lib
from deres_jax.scaling import runs as scaling_runs
from deres_jax.train import jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(lr=1e-3):
  c = config_lib.load_file(os.path.join(ROOT, 'configs', 'tiny.py'))
  c.optim.learning_rate = lr
  return c


def _fake(calls, broken=()):
  def train(config, workdir, dataset=None):
    del dataset
    name = os.path.basename(workdir)
    calls.append(name)
    if name in broken:
      raise RuntimeError(f'{name} diverged')
    summary = {'test_auc': config.optim.learning_rate}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
    return summary
  return train


def test_jobs_are_validated_before_any_training(tmp_path):
  bad = _config()
  bad.train.num_steps = 0
  calls = []
  with pytest.raises(config_lib.ConfigError, match=r"^c \(job 3/3\): config.train.num_steps must be positive"):
    jobs.run([jobs.Job('a', _config()), jobs.Job('b', _config()), jobs.Job('c', bad)], str(tmp_path),
             _fake(calls), dataset=object())
  assert calls == []


def test_a_killed_run_resumes_and_a_failed_job_is_recorded_then_retried(tmp_path):
  job_list = [jobs.Job(n, _config(lr)) for n, lr in (('a', 0.1), ('b', 0.2), ('c', 0.3))]
  calls = []

  def killed(config, workdir, dataset=None):
    if os.path.basename(workdir) == 'c':
      raise KeyboardInterrupt  # Ctrl-C (or a kill) while the third job trains
    return _fake(calls, broken={'b'})(config, workdir, dataset)

  with pytest.raises(KeyboardInterrupt):
    jobs.run(job_list, str(tmp_path), killed, dataset=object(), out=io.StringIO())
  failed = json.loads((tmp_path / 'b' / 'failed.json').read_text())
  assert failed['error'] == 'RuntimeError: b diverged' and 'Traceback' in failed['traceback']
  # The rerun reads 'a' back, retries the failed 'b' (it fails again), trains 'c'.
  calls.clear()
  out = io.StringIO()
  results = jobs.run(job_list, str(tmp_path), _fake(calls, broken={'b'}), dataset=object(), out=out,
                     describe=lambda s: f"auc {s['test_auc']}")
  assert calls == ['b', 'c']
  assert [r.status for r in results] == ['done before', 'failed', 'trained']
  assert results[0].summary == {'test_auc': 0.1} and results[1].error == 'RuntimeError: b diverged'
  assert '[1/3] a: done before, auc 0.1' in out.getvalue()
  assert '2/3 jobs finished, 1 failed (retried on the next run)' in out.getvalue()
  # Fixed: the next run trains only 'b', and its failed.json goes.
  calls.clear()
  results = jobs.run(job_list, str(tmp_path), _fake(calls), dataset=object(), out=io.StringIO())
  assert calls == ['b'] and all(r.summary is not None for r in results)
  assert not (tmp_path / 'b' / 'failed.json').exists()


def test_time_budget_leaves_jobs_not_run_for_the_next_run(tmp_path):
  job_list = [jobs.Job(n, _config()) for n in ('a', 'b')]
  calls = []
  results = jobs.run(job_list, str(tmp_path), _fake(calls), dataset=object(), max_minutes=-1,
                     out=io.StringIO())
  assert calls == [] and [r.status for r in results] == ['not run', 'not run']
  results = jobs.run(job_list, str(tmp_path), _fake(calls), dataset=object(), out=io.StringIO())
  assert calls == ['a', 'b']


def test_scaling_sweep_records_and_retries_a_failing_point(tmp_path):
  config = _config()
  with config.unlocked():
    config.scaling = scaling_runs.split_config(
        config_lib.load_file(os.path.join(ROOT, 'configs', 'scaling', 'synthetic.py')))[1]
    config.scaling.update(depths=(1,), widths=(16,), seeds=(0,))
  calls, broken = [], {'deres_depth1_width16_seed0'}

  def fake(cfg, workdir, dataset=None):
    name = os.path.basename(workdir)
    calls.append(name)
    if name in broken:
      raise FloatingPointError('non-finite loss')
    summary = {'flops_per_example': 10, 'steps': 4, 'num_params': 3, 'dense_params': 2,
               'embedding_params': 1, 'test_auc': 0.6, 'test_logloss': 0.5, 'val_auc': 0.6,
               'val_logloss': 0.5, 'train_seconds': 1.0}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
    return summary

  records = scaling_runs.run(config, str(tmp_path), ['deres'], train_fn=fake, out=io.StringIO())
  assert [r['name'] for r in records] == ['logreg_seed0']
  assert (tmp_path / 'deres_depth1_width16_seed0' / 'failed.json').exists()
  calls.clear()
  broken.clear()
  records = scaling_runs.run(config, str(tmp_path), ['deres'], train_fn=fake, out=io.StringIO())
  assert calls == ['deres_depth1_width16_seed0']  # the finished point is read back
  assert [r['name'] for r in records] == ['logreg_seed0', 'deres_depth1_width16_seed0']
