"""The main table's converged setting (configs/tables/main.py, --preset=converged): DeRes with the
library's defaults against the paper's configuration, a DNN and DCNv2 (docs/quality.md, fourth round).

  PYTHONPATH=. python benchmarks/converged_defaults.py <paper|lib|libcross|dnn|dcnv2|wide> [seed] [workdir]

'paper' is the table's DeRes row; 'lib' adds Auto-Split tokens and no final RMSNorm; 'libcross' also
the DCNv2 cross stem 3 (the configs/byo_csv.py defaults); 'dnn' a DNN at the same embedding size;
'dcnv2' the table's DCNv2 row; 'wide' the paper's DeRes at width 64. Prints the test AUC.
"""
import os
import sys

from deres_jax import config as config_lib
from deres_jax import models
from deres_jax.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
t = config_lib.load_table(os.path.join(ROOT, 'configs', 'tables', 'main.py'))
which = sys.argv[1] if len(sys.argv) > 1 else ''
if which not in ('paper', 'lib', 'libcross', 'dnn', 'dcnv2', 'wide'):
  sys.exit(f'unknown variant {which!r}: choose paper, lib, libcross, dnn, dcnv2 or wide')
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
c = t.ROWS['DCNv2' if which == 'dcnv2' else 'DeRes'](t.base_config('synthetic', '', 'converged'))
c.seed = seed
if which == 'lib':        # Auto-Split tokens + no final RMSNorm (configs/byo_csv.py defaults, no stem)
  c.model.update(tokenizer='autosplit', out_norm='none')
elif which == 'libcross':  # ... and the DCNv2 cross stem 3
  c.model.update(tokenizer='autosplit', out_norm='none', embed_cross=3)
elif which == 'dnn':
  c.model = models.model_config('dnn', embed_dim=8)
elif which == 'wide':      # the paper's DeRes at width 64
  c.model.update(width=64, embed_dim=16)
config_lib.validate(c)
workdir = sys.argv[3] if len(sys.argv) > 3 else '/tmp/converged_defaults'
s = trainer.train_and_evaluate(c, os.path.join(workdir, which + (f'_s{seed}' if seed else '')))
print(which, seed, round(s['test_auc'], 4), s['epochs'], s['train_seconds'])
