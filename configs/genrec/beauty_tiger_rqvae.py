"""TIGER (RQ-VAE semantic IDs + encoder-decoder retriever) on Amazon 2014 Beauty 5-core.

  python launch/train.py --config=configs/genrec/beauty_tiger_rqvae.py:cpu --workdir=/tmp/g_tiger

Item features: TF-IDF + SVD of the S3-Rec attributes concatenated with PPMI + SVD collaborative
vectors from the training parts (no item text exists in the data here; TIGER used Sentence-T5
on title/brand/category/price). Presets: 'full' = TIGER's sizes and
schedule (4+4 layers of width 128, batch 256, 200k steps, lr 0.01 then inverse square root);
'cpu' = a shrunken retriever and short schedule for 2 CPU cores; 'tiny' = tests.
"""
from deres_jax.genrec.config import base_config


def get_config(arg='cpu'):
  config = base_config('tiger')
  # Data and item features
  config.data.dataset = 'beauty'
  # Attributes alone give 3,120 distinct attribute sets for 12,101 items (95% of items collide
  # under RQ-KMeans); concatenating train-only collaborative vectors separates them (19%).
  config.features.update(source='attributes+collaborative', dim=64)
  # Tokenizer: TIGER's RQ-VAE (3 x 256 codes, latent 32, 512-256-128, beta 0.25, Adagrad 0.4).
  config.tokenizer.update(name='rqvae', levels=3, codebook_size=256, latent_dim=32, hidden=(512, 256, 128),
                          beta=0.25, optimizer='adagrad', learning_rate=0.4, batch_size=1024)
  if arg == 'full':
    config.tokenizer.steps = 20000
    config.optim.update(learning_rate=1e-2, embed_learning_rate=1e-2, warmup_steps=0)
    config.train.update(batch_size=256, num_steps=200000, log_every=1000)
    config.eval.update(every_steps=10000, num_val_users=2000)
    config.ckpt.every_steps = 5000
  elif arg == 'cpu':
    # Adagrad 0.4 collapsed on these features (1000 steps: 32 distinct IDs, usage 4-6% per level);
    # Adam 1e-3 for 800 steps keeps >= 89% usage per level.
    config.tokenizer.update(optimizer='adam', learning_rate=1e-3, batch_size=512, steps=800, log_every=100)
    config.model.update(width=64, num_heads=4, head_dim=16, mlp_dim=256, enc_depth=2, dec_depth=2)
    config.optim.update(learning_rate=2e-3, embed_learning_rate=2e-3)
    config.train.update(batch_size=128, num_steps=2000, log_every=250)
    config.eval.update(every_steps=1000, num_val_users=1000, batch_size=256)
    config.ckpt.every_steps = 500
  elif arg == 'tiny':
    config.data.path = 'tests/data/genrec'
    config.features.dim = 16
    config.tokenizer.update(levels=2, codebook_size=8, latent_dim=8, hidden=(32,), steps=20, batch_size=128,
                            restart_every=10, log_every=10, num_user_tokens=16)
    config.model.update(width=16, num_heads=2, head_dim=8, mlp_dim=32, enc_depth=1, dec_depth=1)
    config.train.update(batch_size=32, num_steps=8, log_every=4)
    config.eval.update(every_steps=4, batch_size=64, beam_size=10)
    config.ckpt.every_steps = 4
  else:
    raise ValueError(f"preset must be 'cpu', 'full' or 'tiny', got {arg!r}.")
  return config
