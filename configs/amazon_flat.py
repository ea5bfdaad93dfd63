"""Amazon Beauty as a flat CTR table (8 categorical fields, no histories): docs/quality.md.

  python benchmarks/make_amazon_flat_csv.py --out=/tmp/amz/Beauty.csv
  python launch/prepare_data.py csv --config=configs/amazon_flat.py --data_dir=/tmp/amz/prep
  python launch/train.py --config=configs/amazon_flat.py --workdir=/tmp/amz_flat

The library's defaults for your own CSV (configs/byo_csv.py) with this file's schema.
"""
import os

from deres_jax.config import load_file


def get_config():
  config = load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'byo_csv.py'))
  # Data: the CSV written by benchmarks/make_amazon_flat_csv.py.
  config.data.csv_files = ('/tmp/amz/Beauty.csv',)
  config.data.csv_dense = ()
  config.data.csv_categorical = ('user', 'item', 'a0', 'a1', 'alast', 'prev', 'prev_alast', 'prev2')
  config.data.min_count = 1
  config.data.path = '/tmp/amz/prep'
  return config
