"""Tiny: a seconds-long run on small synthetic data, for smoke and reliability tests only.

  python launch/train.py --config=configs/tiny.py --workdir=/tmp/tiny

Not a benchmark: 4k training rows and a 2-block DeRes of width 16 learn little. The
reliability tests (tests/test_reliability.py) kill and rerun this command.
"""
from deres_jax.config import base_config


def get_config():
  config = base_config()
  # Data: 4096/1024/1024 synthetic rows, vocabularies of at most 1000 ids.
  config.data.num_train, config.data.num_val, config.data.num_test = 4096, 1024, 1024
  config.data.max_vocab = 1000
  # Model: a tiny DeRes (2 blocks, width 16, 4 RankMixer tokens).
  config.model.update(depth=2, width=16, num_heads=2, embed_dim=8, ffn_mult=2, head_hidden=(32,),
                      tokenizer='group', num_tokens=4, block_size=2)
  # Training: 40 steps of 256 rows, a checkpoint every 5.
  config.train.update(batch_size=256, num_steps=40, log_every=5, progress=False)
  config.eval.update(every_steps=20, batch_size=512)
  config.ckpt.every_steps = 5
  config.ckpt.max_to_keep = 3
  return config
