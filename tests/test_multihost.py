"""Two processes on localhost (4 CPU devices each, gloo collectives) train in lock-step."""
import os
import socket
import subprocess
import sys

from deres_jax import data
from deres_jax.train import metric_writer, trainer
from deres_jax.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ['--config.train.num_steps=6', '--config.train.log_every=2',
             '--config.eval.every_steps=6', '--config.ckpt.every_steps=3']


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _tiny_config():
  c = load_file(os.path.join(ROOT, 'configs', 'tiny.py'))
  c.train.update(num_steps=6, log_every=2)
  c.eval.every_steps = 6
  c.ckpt.every_steps = 3
  return c


def _losses(workdir):
  return {r['step']: r['train/loss'] for r in metric_writer.read(os.path.join(workdir, 'metrics.jsonl'))
          if 'train/loss' in r}


def test_two_processes_match_one_process_with_8_devices(tmp_path):
  port = _free_port()
  flags = os.environ.get('DERES_TEST_XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=flags)
  cmd = [sys.executable, os.path.join(ROOT, 'launch', 'train.py'),
         f'--config={os.path.join(ROOT, "configs", "tiny.py")}', f'--workdir={tmp_path / "multi"}',
         f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2'] + OVERRIDES
  procs = [subprocess.Popen(cmd + [f'--process_id={i}'], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=240)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert '8 device(s)' in outs[0].replace('\n', ' ')
  c = _tiny_config()
  single = trainer.train_and_evaluate(c, str(tmp_path / 'single'), dataset=data.load(c.data))
  multi, one = _losses(tmp_path / 'multi'), _losses(tmp_path / 'single')
  assert sorted(multi) == sorted(one) == [2, 4, 6]  # metrics written once (process 0 only)
  for step in one:
    assert abs(multi[step] - one[step]) < 1e-5, (step, multi[step], one[step])
  import json  # pylint: disable=g-import-not-at-top
  with open(tmp_path / 'multi' / 'summary.json') as f:
    summary = json.load(f)
  assert summary['processes'] == 2 and summary['devices'] == 8
  # Logits agree to float32 level; an AUC moves by a pair's worth when two nearly tied scores swap.
  assert abs(summary['test_auc'] - single['test_auc']) < 1e-4
  assert sorted(n for n in os.listdir(tmp_path / 'multi' / 'checkpoints') if n.isdigit()) == ['3', '6']
