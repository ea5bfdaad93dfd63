"""TIGER retriever over RQ-KMeans semantic IDs (GRID's best tokenizer) on Amazon 2014 Beauty.

  python launch/train_genrec.py --config=configs/genrec/beauty_tiger_rqkmeans.py:cpu --workdir=/tmp/g_rqk

The same retriever and presets as beauty_tiger_rqvae.py; only the tokenizer differs
(residual k-means on the TF-IDF + SVD attribute vectors, 3 x 256, fitted on training items).
"""
import importlib.util
import os


def get_config(arg='cpu'):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beauty_tiger_rqvae.py')
  spec = importlib.util.spec_from_file_location('beauty_tiger_rqvae', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(arg)
  config.tokenizer.name = 'rqkmeans'
  return config
