"""The one training loop (train/trainer.py) gives every family the same guarantees (issue 25).

For each of the three families, on a tiny config (12 steps, a log line every 3, validation
every 6, a checkpoint every 3): SIGTERM mid-run saves and raises Preempted (exit 143), and the
rerun ends with the same summary and metrics lines as an uninterrupted run; a live workdir
and a changed model field are refused in one sentence; an injected non-finite loss never
reaches the parameters; 1 and 8 devices give the same loss. The CTR family's versions of these
(a real SIGTERM to launch/train.py, exit code 143, bitwise-identical reruns, NaN batches, 1 vs 8
devices) are in test_reliability.py; the refusals are tested here for all three.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from deres_jax import config as config_lib
from deres_jax import plotting
from deres_jax.multiscenario import models as ms_models
from deres_jax.train import family as family_lib
from deres_jax.train import metric_writer, trainer
from deres_jax.train import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ('ctr', 'multiscenario', 'genrec')
# The CTR family's SIGTERM/resume, non-finite and 1-vs-8-device runs are test_reliability.py's
# (subprocesses of launch/train.py, bitwise comparisons); here the two other families.
OTHERS = ('multiscenario', 'genrec')
# Summary fields that measure time, not the result.
TIMING = ('train_seconds', 'compile_seconds', 'examples_per_second', 'test_seconds',
          'decode_ms_per_user')


def family_config(name: str, **train):
  """A 12-step config of the family (small data, small model)."""
  if name == 'ctr':
    c = config_lib.load_file(os.path.join(ROOT, 'configs', 'tiny.py'))
  elif name == 'multiscenario':
    c = config_lib.load_file(os.path.join(ROOT, 'configs', 'multiscenario', 'synthetic.py'))
    c.data.update(num_train=2048, num_val=512, num_test=512)
    # STAR, not the config's MI-DPG: scenario-specific weights through the loop at a third of
    # MI-DPG's compile time (MI-DPG's own runs: test_multiscenario_train.py).
    c.model = ms_models.model_config('star', embed_dim=c.model.embed_dim, hidden=(16, 8))
    c.eval.batch_size = 512
  else:
    c = config_lib.load_file(os.path.join(ROOT, 'configs', 'genrec', 'beauty_sasrec.py'), 'tiny')
    c.data.path = os.path.join(ROOT, 'tests', 'data', 'genrec')
  c.train.update(batch_size=256 if name != 'genrec' else 32, num_steps=12, log_every=3,
                 progress=False)
  c.train.update(train)
  c.eval.every_steps = 6
  c.ckpt.update(every_steps=3, max_to_keep=2)
  return c


_REFERENCE = {}


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """reference(family) -> (workdir, summary) of one uninterrupted 12-step run (made once)."""
  def get(name):
    if name not in _REFERENCE:
      workdir = str(tmp_path_factory.mktemp(f'reference_{name}'))
      _REFERENCE[name] = workdir, trainer.train_and_evaluate(family_config(name), workdir)
    return _REFERENCE[name]
  return get


def _strip(summary):
  return {k: v for k, v in summary.items() if k not in TIMING}


def _lines(workdir):
  return metric_writer.read(os.path.join(workdir, 'metrics.jsonl'))


def _state(workdir, step):
  tree = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, 'checkpoints', str(step), 'state'))
  return jax.tree.map(np.asarray, tree)


@pytest.mark.parametrize('name', OTHERS)
def test_sigterm_saves_and_the_rerun_ends_identical(name, reference, tmp_path, monkeypatch):
  ref_dir, ref = reference(name)
  workdir = str(tmp_path / 'run')
  write = trainer._write_train_metrics  # pylint: disable=protected-access

  def write_then_signal(writer, step, *args):  # a SIGTERM arrives during step 6's log line
    write(writer, step, *args)
    if step == 6:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(trainer, '_write_train_metrics', write_then_signal)
  with pytest.raises(trainer.Preempted) as e:
    trainer.train_and_evaluate(family_config(name), workdir)
  assert e.value.code == 143 and 'Run the same command again to resume.' in e.value.message
  saved = int(e.value.message.split('at step ')[1].split(':')[0])
  assert 6 <= saved < 12 and os.path.isdir(os.path.join(workdir, 'checkpoints', str(saved)))
  monkeypatch.setattr(trainer, '_write_train_metrics', write)
  resumed = trainer.train_and_evaluate(family_config(name), workdir)
  assert resumed['family'] == name and resumed['steps'] == 12
  assert _strip(resumed) == _strip(ref)
  assert _lines(workdir) == _lines(ref_dir)


@pytest.mark.parametrize('name', FAMILIES)
def test_live_workdir_and_changed_model_field_are_refused(name, reference, tmp_path):
  ref_dir, _ = reference(name)
  changed = family_config(name)
  field = {'ctr': 'depth', 'multiscenario': 'hidden', 'genrec': 'width'}[name]
  changed.model[field] = (32, 16) if name == 'multiscenario' else 2 * changed.model[field]
  with pytest.raises(config_lib.ConfigError, match=f'model.{field}') as e:
    trainer.train_and_evaluate(changed, ref_dir)
  assert '\n' not in str(e.value)
  # A live process (this test's parent) holds the lock of another workdir.
  busy = tmp_path / 'busy'
  busy.mkdir()
  (busy / '.lock.0').write_text(json.dumps({'pid': os.getppid(), 'host': socket.gethostname()}))
  with pytest.raises(workdir_lib.WorkdirBusyError, match='is in use by process'):
    trainer.train_and_evaluate(family_config(name), str(busy))


@pytest.mark.parametrize('name', OTHERS)
def test_injected_nonfinite_loss_never_reaches_the_parameters(name, tmp_path, monkeypatch):
  family = family_lib.get(name)

  def poisoned_build(*args):
    task = family.build(*args)

    def loss(params, batch, rng, step):  # NaN at the 5th step (0-based step 4) only
      value, metrics = task.loss(params, batch, rng, step)
      return value * jnp.where(step == 4, jnp.nan, 1.0), metrics
    return task._replace(loss=loss)

  monkeypatch.setattr(family_lib, 'get', lambda config: family._replace(build=poisoned_build))
  with pytest.raises(trainer.NonFiniteError, match=r'at step 5 \(the update was not applied\); '
                                                   r'the last good checkpoint is step 3 in '):
    trainer.train_and_evaluate(family_config(name), str(tmp_path))
  assert sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit()) == [3]
  state = _state(str(tmp_path), 3)
  assert int(state['nonfinite']) == 0
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))


@pytest.mark.parametrize('name', OTHERS)
def test_one_and_eight_devices_give_the_same_loss(name, reference, tmp_path):
  ref_dir, _ = reference(name)
  one = family_config(name, num_steps=3)
  trainer.train_and_evaluate(one, str(tmp_path), devices=jax.devices()[:1])
  first = lambda w: next(r for r in _lines(w) if 'train/loss' in r)
  a, b = first(str(tmp_path)), first(ref_dir)
  assert a['step'] == b['step'] == 3
  np.testing.assert_allclose(a['train/loss'], b['train/loss'], rtol=1e-5, atol=1e-6)


def test_genrec_run_has_eval_metrics_and_plot_draws_its_validation_curve(reference, tmp_path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  workdir, summary = reference('genrec')
  assert summary['best_step'] in (6, 12) and 'recall@10' in summary['test']
  fig = plotting.plot_runs([workdir])
  titles = [ax.get_title() for ax in fig.axes]
  assert titles == ['training loss', 'validation recall@10']
  (line,) = fig.axes[1].get_lines()
  steps, values = line.get_data()
  assert list(steps) == [6, 12] and np.all(np.asarray(values) >= 0)
  plotting.save(fig, str(tmp_path / 'curve.png'))
  assert os.path.getsize(tmp_path / 'curve.png') > 1000


@pytest.mark.parametrize('args, message', [
    (['--config=configs/genrec/beauty_sasrec.py:tiny', '--config.model.widht=8'],
     "config.model.widht is not a field of the 'sasrec' model"),
    (['--config=configs/multiscenario/synthetic.py', '--config.model.rnak=4'],
     "model 'midpg' has no field 'rnak'"),
    (['--config=configs/tiny.py', '--config.family=genrek'],
     "config.family='genrek' is not one of"),
])
def test_cli_errors_are_one_line_with_exit_2_for_every_family(args, message, tmp_path):
  run = subprocess.run([sys.executable, os.path.join(ROOT, 'launch', 'train.py'),
                        f'--workdir={tmp_path}', *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert run.returncode == 2, run.stdout + run.stderr
  errors = [l for l in run.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], run.stderr


def _config_files():
  for folder, _, files in os.walk(os.path.join(ROOT, 'configs')):
    for f in sorted(files):
      if f.endswith('.py') and f != '__init__.py':
        yield os.path.relpath(os.path.join(folder, f), ROOT)


PRESETS = {  # files whose get_config takes a preset: every preset is checked
    'configs/genrec/beauty_sasrec.py': ('cpu', 'full', 'tiny'),
    'configs/genrec/beauty_tiger_rqvae.py': ('cpu', 'cpu_long', 'full', 'tiny'),
    'configs/genrec/beauty_tiger_rqkmeans.py': ('cpu', 'full', 'tiny'),
    'configs/genrec/beauty_cobra.py': ('cpu', 'tiny', 'cpu_content'),
    'configs/genrec/beauty_capsid.py': ('cpu', 'tiny', 'cpu_hard', 'cpu_iter1', 'cpu_fixed2', 'cpu_fixed4',
                                        'cpu_nospread', 'cpu_T2', 'cpu_T5', 'cpu_lmax4', 'cpu_lmax8',
                                        'cpu_tau0.75', 'cpu_tau0.90', 'cpu_deep32',
                                        'cpu_deep32len'),
    'configs/genrec/beauty_capsid_bpe.py': ('cpu', 'tiny', 'cpu_freq', 'cpu_keep0', 'cpu_hard', 'cpu_fixed2'),
    'configs/scaling/synthetic.py': ('short', 'converged'),
}


# configs/tables/ holds row lists, not get_config files: test_paper_table.py validates them row by row.
@pytest.mark.parametrize('path', sorted(p for p in _config_files() if not p.startswith('configs/tables/')))
def test_every_config_file_loads_and_validates(path):
  for arg in PRESETS.get(path, (None,)):
    config = config_lib.load_file(os.path.join(ROOT, path), arg)
    family = family_lib.get(config)
    if 'scaling' in config:  # the scaling sweep's own section; the rest is a CTR config
      from deres_jax.scaling import runs  # pylint: disable=g-import-not-at-top
      config, _ = runs.split_config(config)
    family.validate(config, num_devices=8)
