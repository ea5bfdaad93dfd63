"""DeRes on Kaggle Criteo with BARS Criteo_x4-style preparation (39 categorical fields).

  python launch/prepare_data.py criteo --manual_dir=~/dac --data_dir=/data/criteo_x4
  python launch/train.py --config=configs/criteo.py --workdir=/tmp/criteo \\
      --config.data.path=/data/criteo_x4

Preparation: I1..I13 bucketed by floor(ln(v)^2) (FuxiCTR), min_count 10, random 8:1:1 split
(docs/data.md). Batch 10,000 and early stopping on validation AUC as in BARS x4_001.
"""
from deres_jax.config import base_config


def get_config():
  config = base_config()
  # Data: prepared by launch/prepare_data.py criteo (the path is required).
  config.data.name = 'criteo'
  config.data.path = ''
  config.data.min_count = 10
  # Model: DeRes with RankMixer-style group tokens (39 fields -> 8 tokens) and the cross stem.
  config.model.connector = 'deres'
  config.model.embed_dim = 16
  config.model.tokenizer = 'group'
  config.model.num_tokens = 8
  config.model.depth = 4
  config.model.width = 64
  config.model.block_size = 2          # one layer per AttnRes block (4 blocks)
  config.model.embed_cross = 3         # DCNv2 cross stem (docs/quality.md; 0 = the paper's DeRes)
  config.model.head_hidden = (256,)
  # Training (BARS x4 recipe): up to 3 epochs of the 36.7M training rows, validation every half
  # epoch, early stopping after 2 without gain, both learning rates x0.1 after each validation
  # without gain, the best-validation parameters for the test split, embedding_regularizer 1e-5.
  config.train.batch_size = 10_000
  config.train.num_epochs = 3.0
  config.train.log_every = 100
  config.eval.every_epochs = 0.5
  config.eval.batch_size = 50_000
  config.eval.patience = 2
  config.optim.learning_rate = 1e-3
  config.optim.embed_learning_rate = 1e-3
  config.optim.plateau_factor = 0.1
  config.optim.embed_l2 = 1e-5
  config.ckpt.every_steps = 900
  return config
