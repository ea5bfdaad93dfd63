"""TIGER (RQ-VAE semantic IDs + encoder-decoder retriever) on Amazon 2014 Beauty 5-core.

  python launch/train.py --config=configs/genrec/beauty_tiger_rqvae.py:cpu --workdir=/tmp/g_tiger

Item features: TF-IDF + SVD of the S3-Rec attributes concatenated with PPMI + SVD collaborative
vectors from the training parts (no item text exists in the data here; TIGER used Sentence-T5
on title/brand/category/price). Presets:
  'full'     TIGER's published setup for an accelerator: T5-style 4+4 layers, d_model 128, 6 heads
             of 64, MLP 1024, dropout 0.1, relative position bias, batch 256, lr 0.01 for 10k
             steps then inverse square root, 200k steps; RQ-VAE 3 x 256, latent 32, but trained
             with Adam 1e-3 (Adagrad 0.4 collapsed to 32 IDs on these features; see 'cpu');
  'cpu'      a shrunken retriever and a short schedule for 2 CPU cores;
  'cpu_long' the cpu retriever for about 2 hours of 2 cores: GRID's sub-sequence windows,
             warm-up then inverse square root, 20k steps (not yet run: issue 28);
  'tiny'     tests.
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
    config.tokenizer.update(optimizer='adam', learning_rate=1e-3, steps=20000)
    config.optim.update(learning_rate=1e-2, embed_learning_rate=1e-2, schedule='rsqrt', warmup_steps=0,
                        hold_steps=10000)
    config.train.update(batch_size=256, num_steps=200000, log_every=1000)
    config.eval.update(every_steps=10000, num_val_users=2000)
    config.ckpt.every_steps = 5000
  elif arg in ('cpu', 'cpu_long'):
    # Adagrad 0.4 collapsed on these features (1000 steps: 32 distinct IDs, usage 4-6% per level);
    # Adam 1e-3 for 800 steps keeps >= 89% usage per level.
    config.tokenizer.update(optimizer='adam', learning_rate=1e-3, batch_size=512, steps=800, log_every=100)
    config.model.update(width=64, num_heads=4, head_dim=16, mlp_dim=256, enc_depth=2, dec_depth=2)
    config.optim.update(learning_rate=2e-3, embed_learning_rate=2e-3)
    config.train.update(batch_size=128, num_steps=2000, log_every=250)
    config.eval.update(every_steps=1000, num_val_users=1000, batch_size=256)
    config.ckpt.every_steps = 500
    if arg == 'cpu_long':
      config.data.windows = 'subsequence'
      config.optim.update(schedule='rsqrt', warmup_steps=500, hold_steps=2000)
      config.train.update(num_steps=20000, log_every=500)
      config.eval.update(every_steps=2000)
      config.ckpt.every_steps = 1000
  elif arg == 'tiny':
    config.data.path = 'tests/data/genrec'
    config.features.dim = 16
    config.tokenizer.update(levels=2, codebook_size=8, latent_dim=8, hidden=(32,), steps=20, batch_size=128,
                            restart_every=10, log_every=10, num_user_tokens=16)
    config.model.update(width=16, num_heads=2, head_dim=8, mlp_dim=32, enc_depth=1, dec_depth=1)
    config.data.bucket_items = 0   # one encoder shape: one compilation of the train step (bucketing: its own tests)
    config.train.update(batch_size=32, num_steps=8, log_every=4)
    config.eval.update(every_steps=4, batch_size=64, beam_size=10)
    config.ckpt.every_steps = 4
  else:
    raise ValueError(f"preset must be 'cpu', 'cpu_long', 'full' or 'tiny', got {arg!r}.")
  return config
