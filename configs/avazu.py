"""DeRes on Kaggle Avazu with BARS Avazu_x4-style preparation (24 categorical fields).

  python launch/prepare_data.py avazu --manual_dir=~/avazu --data_dir=/data/avazu_x4
  python launch/train.py --config=configs/avazu.py --workdir=/tmp/avazu \\
      --config.data.path=/data/avazu_x4

Preparation: id dropped, hour -> hour-of-day, weekday, weekend; min_count 2; random 8:1:1
split (docs/data.md). The model and training follow configs/criteo.py.
"""
import os

from deres_jax.config import load_file


def _criteo_config():
  return load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'criteo.py'))


def get_config():
  config = _criteo_config()
  # Data: prepared by launch/prepare_data.py avazu (the path is required).
  config.data.name = 'avazu'
  config.data.min_count = 2
  # Training: the Criteo epoch recipe over the 32.3M training rows.
  config.ckpt.every_steps = 800
  return config
