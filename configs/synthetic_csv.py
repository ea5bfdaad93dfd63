"""The synthetic generator as a CSV of the held-out task's shape (600k training rows, 8 dense +
20 categorical fields; issue 26, docs/quality.md): the library's defaults for your own CSV
(configs/byo_csv.py) with this file's schema.

  python benchmarks/make_synthetic_csv.py --rows=750000 --dense=8 --categorical=20 --out=/tmp/syn/syn.csv
  python launch/prepare_data.py csv --config=configs/synthetic_csv.py --data_dir=/tmp/syn/prep
  python launch/train.py --config=configs/synthetic_csv.py --workdir=/tmp/syn_deres
"""
import os

from deres_jax.config import load_file


def get_config():
  config = load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'byo_csv.py'))
  # Data: the CSV written by benchmarks/make_synthetic_csv.py (80/10/10 random split).
  config.data.csv_files = ('/tmp/syn/syn.csv',)
  config.data.csv_dense = tuple(f'I{k}' for k in range(1, 9))
  config.data.csv_categorical = tuple(f'C{k}' for k in range(1, 21))
  config.data.path = '/tmp/syn/prep'
  return config
