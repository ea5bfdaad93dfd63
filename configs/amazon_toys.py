"""Amazon Toys (5-core) as CTR data with behaviour histories: configs/amazon_beauty.py's recipe.

  python launch/prepare_data.py amazon --category=toys --data_dir=/data/amazon_toys
  python launch/train.py --config=configs/amazon_toys.py:din --workdir=/tmp/amazon_toys_din \\
      --config.data.path=/data/amazon_toys

`arg` names the model (default 'din'), as in configs/amazon_beauty.py.
"""
import os

from deres_jax.config import load_file


def get_config(arg=None):
  return load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'amazon_beauty.py'), arg)
