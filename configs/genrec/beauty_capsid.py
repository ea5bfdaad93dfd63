"""CAPSID (capsule-routed variable-length semantic IDs) + the TIGER retriever on Amazon 2014 Beauty.

  python launch/train.py --config=configs/genrec/beauty_capsid.py:cpu --workdir=/tmp/g_capsid

Same item features, retriever and presets as beauty_tiger_rqvae.py; the tokenizer is CAPSID
(genrec/capsid.py: 4 levels x 256 capsules, 3 routing iterations, top-4 routing, the ID ends
once the active capsule's coefficient reaches 0.9 after at least 2 tokens). The paper
(arXiv 2605.05096) publishes none of these values: each is a config.tokenizer field.
Ablations (issue 16) are presets of this file: 'cpu_hard' (hard routing = residual k-means
assignment), 'cpu_iter1' (one routing iteration), 'cpu_fixed' (fixed length 4).
"""
import os

from deres_jax.config import load_file


def _rqvae_config(arg):
  return load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beauty_tiger_rqvae.py'), arg)


def get_config(arg='cpu'):
  preset, _, ablation = arg.partition('_')
  if ablation not in ('', 'hard', 'iter1', 'fixed'):
    raise ValueError(f"ablation must be one of '', 'hard', 'iter1', 'fixed' (e.g. 'cpu_hard'), got {ablation!r}.")
  config = _rqvae_config(preset)
  # Tokenizer: CAPSID, TIGER's encoder sizes and codebook size, Adam (as the cpu RQ-VAE).
  config.tokenizer.update(name='capsid', max_levels=4, min_levels=2, routing_iters=3, tau=0.1, top_m=4,
                          threshold=0.9, votes='capsule', usage_weight=0.1, sharp_weight=0.01,
                          collisions='extend', optimizer='adam', learning_rate=1e-3)
  # Variable-length IDs: one softmax over the whole vocabulary at each step (no per-level output).
  config.model.output = 'full'
  if preset == 'cpu':
    # Routing costs 4 levels x 3 iterations over 256 capsules: 300 steps fit the 2-core budget.
    config.tokenizer.update(steps=300, log_every=100)
  if preset == 'tiny':
    config.tokenizer.update(max_levels=3, min_levels=1, top_m=3, threshold=0.8)
  if ablation == 'hard':
    config.tokenizer.hard = True
  elif ablation == 'iter1':
    config.tokenizer.routing_iters = 1
  elif ablation == 'fixed':
    config.tokenizer.fixed_length = True
  return config
