"""TIGER retriever over RQ-KMeans semantic IDs (GRID's best tokenizer) on Amazon 2014 Beauty.

  python launch/train.py --config=configs/genrec/beauty_tiger_rqkmeans.py:cpu --workdir=/tmp/g_rqk

The same retriever and presets as beauty_tiger_rqvae.py; only the tokenizer differs
(residual k-means on the TF-IDF + SVD attribute vectors, 3 x 256, fitted on training items).
"""
import os

from deres_jax.config import load_file


def get_config(arg='cpu'):
  config = load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beauty_tiger_rqvae.py'), arg)
  config.tokenizer.name = 'rqkmeans'
  return config
