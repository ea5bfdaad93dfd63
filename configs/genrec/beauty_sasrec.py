"""SASRec (full softmax) on Amazon 2014 Beauty 5-core: the bar a generative retriever must clear.

  python launch/train.py --config=configs/genrec/beauty_sasrec.py:cpu --workdir=/tmp/g_sasrec

Presets: 'cpu' (default; 2 CPU cores, a few minutes), 'cpu_long' (as many training targets as
TIGER's cpu_long preset sees, for the learning curve side by side), 'full' (longer, for a
GPU/TPU), 'tiny' (tests: the Beauty slice in tests/data/genrec, seconds).
"""
from deres_jax.genrec.config import base_config


def get_config(arg='cpu'):
  config = base_config('sasrec')
  # Data: ../shared/data/amazon/s3rec/Beauty.txt, leave-one-out, histories of 20.
  config.data.dataset = 'beauty'
  # Model: SASRec, d=64, 2 blocks, 1 head, dropout 0.2 (Kang & McAuley's Beauty setting).
  config.model.update(width=64, depth=2, num_heads=1, dropout=0.2)
  # Optimizer: Adam 1e-3 on everything.
  config.optim.update(learning_rate=1e-3, embed_learning_rate=1e-3)
  if arg == 'cpu':
    # 23,607 causal windows / 128 = 184 steps per epoch; 3,000 steps = ~16 epochs.
    config.train.update(batch_size=128, num_steps=3000, log_every=250)
    config.eval.update(every_steps=500, num_val_users=0)
    config.ckpt.every_steps = 500
  elif arg == 'cpu_long':
    # TIGER cpu_long: 20,000 steps x 128 windows = 2.56M next-item targets. A causal window holds
    # 131,413 / 23,607 = 5.57 targets on average, so 3,600 steps x 128 windows = 2.57M targets.
    config.train.update(batch_size=128, num_steps=3600, log_every=300)
    config.eval.update(every_steps=300, num_val_users=0)
    config.ckpt.every_steps = 600
  elif arg == 'full':
    config.train.update(batch_size=256, num_steps=20000, log_every=500)
    config.eval.update(every_steps=1000)
    config.ckpt.every_steps = 1000
  elif arg == 'tiny':
    config.data.path = 'tests/data/genrec'
    config.model.update(width=16, depth=1)
    config.train.update(batch_size=32, num_steps=8, log_every=4)
    config.eval.update(every_steps=4, batch_size=64)
    config.ckpt.every_steps = 4
  else:
    raise ValueError(f"preset must be 'cpu', 'cpu_long', 'full' or 'tiny', got {arg!r}.")
  return config
