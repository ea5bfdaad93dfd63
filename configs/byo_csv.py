"""Your own CSV/TSV/Parquet: a schema in config.data.csv_*, prepared like Criteo and Avazu.

  python launch/prepare_data.py csv --config=configs/byo_csv.py --data_dir=/data/mine \\
      --config.data.csv_files=my_clicks.csv
  python launch/train.py --config=configs/byo_csv.py --workdir=/tmp/mine --config.data.path=/data/mine

The example schema reads the DeepCTR Criteo sample (tests/data/deepctr_criteo_sample.txt:
a CSV with a header, label,I1..I13,C1..C26): I1..I13 as dense values, C1..C26 as categories.
Edit the csv_* fields for your columns (docs/data.md).
"""
from deres_jax.config import base_config


def get_config():
  config = base_config()
  # Data: the schema of the source files.
  config.data.name = 'csv'
  config.data.path = ''                            # the --data_dir of prepare_data.py
  config.data.csv_files = ('tests/data/deepctr_criteo_sample.txt',)
  config.data.csv_columns = ()                     # () = from the header line
  config.data.csv_label = 'label'
  config.data.csv_dense = tuple(f'I{i}' for i in range(1, 14))
  config.data.csv_categorical = tuple(f'C{i}' for i in range(1, 27))
  config.data.csv_sep = ','
  config.data.csv_header = True
  config.data.min_count = 2                        # tiny sample: keep values seen twice
  # Model: a small DeRes.
  config.model.connector = 'deres'
  config.model.tokenizer = 'group'
  config.model.num_tokens = 8
  config.model.depth = 2
  config.model.width = 32
  # Training: a short run (the sample has 200 rows).
  config.train.batch_size = 64
  config.train.num_steps = 50
  config.train.log_every = 10
  config.eval.every_steps = 25
  config.eval.batch_size = 64
  return config
