"""CAPSID + SemanticBPE on Amazon 2014 Beauty: merged semantic-ID subwords for the TIGER retriever.

  python launch/train.py --config=configs/genrec/beauty_capsid_bpe.py:cpu --workdir=/tmp/g_capsid_bpe

beauty_capsid.py plus SemanticBPE (genrec/semantic_bpe.py): 512 merges scored by
log count + lambda * cos(e_a, e_b), lambda = 1, counted over the training parts (each item's
ID weighted by its training count), never across items. 'cpu_freq' is the ablation with
lambda = 0 (plain frequency BPE). Ablations of the tokenizer: see beauty_capsid.py.
"""
import os

from deres_jax.config import load_file


def get_config(arg='cpu'):
  preset, _, ablation = arg.partition('_')
  if ablation not in ('', 'freq'):
    raise ValueError(f"ablation must be '' or 'freq' (e.g. 'cpu_freq'), got {ablation!r}.")
  config = load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beauty_capsid.py'), preset)
  config.bpe.update(num_merges=16 if preset == 'tiny' else 512, lam=0.0 if ablation == 'freq' else 1.0,
                    corpus='sequences', min_count=2.0)
  return config
