"""CAPSID + SemanticBPE on Amazon 2014 Beauty: merged semantic-ID subwords for the TIGER retriever.

  python launch/train.py --config=configs/genrec/beauty_capsid_bpe.py:cpu --workdir=/tmp/g_capsid_bpe

beauty_capsid.py plus SemanticBPE (genrec/semantic_bpe.py) as the paper defines it: 512 merges
(the count is ours) scored alpha * freq_hat + (1 - alpha) * cos(e_a, e_b), alpha = 0.6, candidates
only above a cosine threshold annealed 0.90 -> 0.55, merge gates (Gumbel in training, hard at
inference), merges inside one item's ID, applied left to right (longest match). theta anneals over
the merge rounds (a round with no pair above it merges nothing); e_t = the mean r_0 of the items
holding token t ('item_mean'; 'cpu_centre': the capsule centres, under which Beauty learns ~0 merges).

The first token of every ID is never merged (`bpe.keep_prefix = 1`; the paper does not say). Merges
into the first token split the trie's first level (512 merges: 356 distinct first tokens instead
of 250, 17.8 % of items starting with a merged subword) and cost most of the recall: at the genrec
table's cpu_short budget, seed 0, test R@10 0.0108 with keep_prefix 0 against 0.0270 with 1 (CAPSID
without BPE 0.0245; docs/genrec.md, "SemanticBPE: merge count and the first token").
Ablations: 'cpu_freq' (frequency-only BPE: alpha = 1, no threshold), 'cpu_centre', 'cpu_keep0'
(merges may take the first token too, as a literal reading of the paper); tokenizer ablations and
sweeps as in beauty_capsid.py ('cpu_hard', 'cpu_T5', ...).
"""
import os

from deres_jax.config import load_file

_CAPSID = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beauty_capsid.py')
_BPE_ONLY = ('freq', 'keep0', 'keep1', 'centre')   # 'keep1': the default, kept for old commands


def get_config(arg='cpu'):
  # '<preset>[_<variant>]': a SemanticBPE variant is ours; any other goes to beauty_capsid.py whole.
  head, _, name = arg.rpartition('_')
  bpe_only = bool(head) and name in _BPE_ONLY
  config = load_file(_CAPSID, head if bpe_only else arg)
  tiny = arg.split('_')[0] == 'tiny'
  config.bpe.update(num_merges=16 if tiny else 512, alpha=0.6, theta_start=0.90, theta_end=0.55,
                    order='left', corpus='sequences', min_count=2.0, keep_prefix=1, theta_rounds=0,
                    embedding='item_mean')
  name = name if bpe_only else ''
  if name == 'freq':
    config.bpe.update(alpha=1.0, theta_start=-1.0, theta_end=-1.0)
  elif name == 'keep0':
    config.bpe.keep_prefix = 0
  elif name == 'centre':
    config.bpe.embedding = 'centre'
  if tiny:
    config.bpe.update(gate_steps=5, warmup_steps=2)
  return config
