"""Quickstart: DeRes on synthetic Criteo-schema data with a known oracle (about 2 minutes on 2 CPU cores).

  python launch/train.py --config=configs/quickstart.py --workdir=/tmp/quickstart

Ends with the test AUC/logloss of DeRes beside the oracle's (the true click probabilities)
and beside a logistic-regression baseline trained on the same rows.
"""
from deres_jax.config import base_config


def get_config():
  config = base_config()
  # Data: 200k/25k/25k synthetic rows (13 dense + 26 categorical fields).
  config.data.name = 'synthetic'
  config.data.num_train = 600_000
  config.data.max_vocab = 10_000
  # Model: a small DeRes (Pointwise AttnRes + identity path, vector gate).
  config.model.connector = 'deres'
  config.model.depth = 2
  config.model.block_size = 2       # one layer per AttnRes block: layer 2 sees completed block 1
  config.model.embed_cross = 2      # DCNv2 cross stem before the tokens (library addition, docs/quality.md)
  config.model.width = 32
  config.model.embed_dim = 16
  config.model.tokenizer = 'autosplit'  # OneTrans Auto-Split: 8 tokens, each a projection of all fields
  config.model.num_tokens = 8
  config.model.out_norm = 'none'    # output tokens keep their scale (docs/quality.md: +0.007 AUC here)
  # Training: about one epoch (CTR models overfit from the second epoch on).
  config.train.batch_size = 1024
  config.train.num_steps = 600
  config.optim.learning_rate = 2e-3
  config.optim.embed_learning_rate = 2e-3
  config.eval.every_steps = 150
  config.ckpt.every_steps = 300
  config.baseline.logreg = True
  return config
