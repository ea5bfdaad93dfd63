"""MI-DPG on synthetic multi-scenario data (4 scenarios, 55/30/13/2 % of rows, oracle known).

  python launch/train.py --config=configs/multiscenario/synthetic.py --workdir=/tmp/ms_syn
  python launch/train.py --config=configs/multiscenario/synthetic.py --workdir=/tmp/ms_star \
      --config.model.name=star

Target: purchase (= CTCVR: click and convert). About 1 minute on 2 CPU cores.
"""
from deres_jax.multiscenario import models
from deres_jax.multiscenario.config import base_config


def get_config():
  config = base_config()
  # Data: 60k/10k/10k rows; the smallest scenario has 1.2k training rows.
  config.data.update(name='synthetic', num_train=60_000, num_val=10_000, num_test=10_000)
  # Model: MI-DPG on a 256-128 MLP.
  config.model = models.model_config('midpg', hidden=(256, 128))
  # Training: 4 epochs of 512 rows.
  config.train.update(batch_size=512, num_steps=470, log_every=50)
  config.eval.update(every_steps=235, batch_size=4096)
  config.ckpt.every_steps = 235
  return config
