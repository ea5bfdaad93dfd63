"""Douban sample (3,000 rows, the real book/movie/music domains), from
../shared/data/multiscenario (a copy in tests/data/multiscenario).

  python launch/train.py --config=configs/multiscenario/douban.py --workdir=/tmp/ms_douban

For the full Douban data (Scenario-Wise Rec layout) point data.train_file at its CSV. Far
too small to rank models: a smoke run.
"""
import os

from deres_jax.multiscenario import models
from deres_jax.multiscenario.config import base_config

_HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_config():
  config = base_config()
  # Data: one CSV split 8:1:1 by data.seed; label rating (binarised), scenario domain.
  config.data.update(name='csv', format='douban', target='rating',
                     train_file=os.path.join(_HERE, 'tests/data/multiscenario/douban_sample.csv'))
  config.model = models.model_config('midpg', hidden=(64, 32))
  config.train.update(batch_size=256, num_steps=60, log_every=10)
  config.eval.update(every_steps=30, batch_size=512)
  config.ckpt.every_steps = 30
  return config
