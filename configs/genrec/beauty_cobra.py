"""COBRA-style sparse + dense retrieval (arXiv 2503.02453, reconstructed) on Amazon 2014 Beauty.

  python launch/train.py --config=configs/genrec/beauty_cobra.py:cpu --workdir=/tmp/g_cobra

The TIGER retriever over RQ-VAE IDs of beauty_tiger_rqvae.py (same features, tokenizer, sizes and
presets), plus a dense head on the decoder state after the ID trained with an in-batch softmax
against learned item vectors, and BeamFusion ranking (genrec/cobra.py). COBRA publishes no code;
each choice below is a config.cobra field. Presets: 'cpu', 'full', 'tiny' (as the RQ-VAE file);
'cpu_content' / 'tiny_content' use a tower over the tokenizer's item content features instead.
"""
import os

from deres_jax.config import load_file


def get_config(arg='cpu'):
  preset, _, variant = arg.partition('_')
  if variant not in ('', 'content'):
    raise ValueError(f"variant must be '' or 'content' (e.g. 'cpu_content'), got {variant!r}.")
  config = load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beauty_tiger_rqvae.py'), preset)
  config.system = 'cobra'
  # Dense part: 64-d vectors (the retriever width in 'cpu'), in-batch softmax at temperature 0.1,
  # equal weight to the token loss; BeamFusion with w = 0.5 and psi = 1 / temperature over the
  # whole catalogue (COBRA's ANN step, exact here).
  config.cobra.update(item_vectors='content' if variant == 'content' else 'learned', dense_dim=64,
                      dense_weight=1.0, temperature=0.1, fusion_weight=0.5, cos_scale=10.0, candidates='ann')
  if preset == 'tiny':
    config.cobra.dense_dim = 16
  return config
