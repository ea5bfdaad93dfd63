"""Your own CSV/TSV/Parquet: a schema in config.data.csv_*, prepared like Criteo and Avazu.

  python launch/prepare_data.py csv --config=configs/byo_csv.py --data_dir=/data/mine \\
      --config.data.csv_files=my_clicks.csv
  python launch/train.py --config=configs/byo_csv.py --workdir=/tmp/mine --config.data.path=/data/mine

(The example sample has 200 rows: add --config.train.batch_size=64 to train on it.)

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
  config.data.csv_sequence = ()                    # list columns ('12|45|78', oldest first): behaviour histories
  config.data.csv_seq_shared = ()                  # per list column: the categorical column whose ids it shares, or ''
  config.data.csv_seq_max_len = 50                 # keep the most recent 50 elements (docs/data.md)
  config.data.min_count = 2                        # tiny sample: keep values seen twice
  # Model: a small DeRes with the cross stem (docs/quality.md).
  config.model.connector = 'deres'
  # OneTrans Auto-Split tokens (every token a projection of all fields) and output tokens that
  # keep their scale: on the real-data diagnosis (results/quality_amazon_flat.md, 5 seeds)
  # 0.7819 against 0.7750 for RankMixer groups with a final RMSNorm, DNN 0.7824.
  config.model.tokenizer = 'autosplit'
  config.zoo_tokenizer = 'autosplit'             # and for any model --config.model.name switches to
  # The DeRes connector, too, for a zoo model switched to (RankMixer, UniMixer, HiFormer,
  # TokenMixer-Large): on flat Amazon, 10 seeds, it lifts UniMixer by +0.0078 over its
  # SiameseNorm and RankMixer by +0.0018 over its PostNorm (docs/quality.md, fifth round);
  # --config.model.connector=<the paper's> still gives the published residual.
  config.zoo_connector = 'deres'
  config.model.out_norm = 'none'
  config.model.num_tokens = 8
  config.model.depth = 2
  config.model.width = 32
  config.model.block_size = 2                      # Block AttnRes over completed layers
  config.model.embed_cross = 3                     # DCNv2 cross stem (0 = the paper's DeRes)
  # Training: epochs, not a step budget, so any data size trains to its validation optimum:
  # up to 10 epochs, validation every half epoch, stop after 2 without gain, the learning rates
  # x0.1 after each validation without gain, the best-validation parameters for the test.
  config.train.batch_size = 256                    # the 200-row sample: --config.train.batch_size=64
  config.train.num_epochs = 10.0
  config.train.log_every = 10
  config.eval.every_epochs = 0.5
  config.eval.patience = 2
  config.eval.batch_size = 4096
  config.optim.plateau_factor = 0.1
  # The embedding L2 from the data size: lambda = 25 / (training rows), a fixed Gaussian prior on the
  # embeddings (train/regularization.py). Flat Amazon (82k training rows, lambda 3e-4), seed 0:
  # +0.015 to +0.025 test AUC for every model over the fixed BARS 1e-5 (docs/quality.md, eighth round);
  # a 600k-row synthetic CSV gets 4e-5. A fixed lambda suits one data size only.
  config.optim.embed_l2 = 0.0
  config.optim.embed_l2_prior = 25.0
  # Embedding tables at 10x the dense rate: a sparse id is updated only in the batches that hold it
  # (docs/quality.md, real data: +0.012 AUC for the DNN, +0.016 for DeRes over 1e-3).
  config.optim.embed_learning_rate = 1e-2
  config.ckpt.every_steps = 1000
  return config
