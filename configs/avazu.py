"""DeRes on Kaggle Avazu with BARS Avazu_x4-style preparation (24 categorical fields).

  python launch/prepare_data.py avazu --manual_dir=~/avazu --data_dir=/data/avazu_x4
  python launch/train.py --config=configs/avazu.py --workdir=/tmp/avazu \\
      --config.data.path=/data/avazu_x4

Preparation: id dropped, hour -> hour-of-day, weekday, weekend; min_count 2; random 8:1:1
split (docs/data.md). Batch 10,000 and early stopping on validation AUC as in BARS x4_001.
"""
from deres_jax.config import base_config


def get_config():
  config = base_config()
  # Data: prepared by launch/prepare_data.py avazu (the path is required).
  config.data.name = 'avazu'
  config.data.path = ''
  config.data.min_count = 2
  # Model: DeRes with RankMixer-style group tokens (24 fields -> 8 tokens).
  config.model.connector = 'deres'
  config.model.embed_dim = 16
  config.model.tokenizer = 'group'
  config.model.num_tokens = 8
  config.model.depth = 4
  config.model.width = 64
  config.model.head_hidden = (256,)
  # Training: about one epoch of the 32.3M training rows.
  config.train.batch_size = 10_000
  config.train.num_steps = 3_200
  config.train.log_every = 100
  config.eval.every_steps = 800
  config.eval.batch_size = 50_000
  config.eval.patience = 2
  config.optim.learning_rate = 1e-3
  config.optim.embed_learning_rate = 1e-3
  config.ckpt.every_steps = 800
  return config
