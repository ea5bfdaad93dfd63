"""Your own multi-scenario CSV/TSV/Parquet: the schema in config.data (docs/multiscenario.md).

  python launch/train.py --config=configs/multiscenario/byo_csv.py --workdir=/tmp/ms_mine \
      --config.data.train_file=my_log.csv

The example schema reads the Douban sample (tests/data/multiscenario/douban_sample.csv) the
way the `douban` preset does: edit the fields below for your columns. One file is split 8:1:1
by data.seed (by data.group_column when set: a session or user never straddles two splits);
set data.val_file and data.test_file for given splits.
"""
import os

from deres_jax.multiscenario import models
from deres_jax.multiscenario.config import base_config

_HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_config():
  config = base_config()
  # Data: the schema of your file.
  config.data.name = 'csv'
  config.data.format = ''                          # '' = the schema below (not a preset)
  config.data.train_file = os.path.join(_HERE, 'tests/data/multiscenario/douban_sample.csv')
  config.data.scenario_column = 'domain'           # one scenario per value seen in training
  config.data.label_columns = ('rating',)          # 0/1 labels
  config.data.target = 'rating'                    # the label trained on (or set data.task)
  config.data.task = ''                            # 'ctr' | 'cvr' | 'ctcvr' with click + conversion labels
  config.data.categorical_columns = ('user_id', 'item_id', 'living_place', 'join_time', 'time_bin')
  config.data.dense_columns = ()
  config.data.group_column = ''                    # a session column keeps sessions whole (Douban has
                                                   # none; 'user_id' would make every test user cold)
  config.data.sep = ','
  config.data.header = True                        # else data.columns names the columns
  config.data.sequence_columns = ()                # list columns ('12|45|78', oldest first): behaviour histories
  config.data.seq_shared = ()                      # per list column: the categorical column whose ids it shares, or ''
  config.data.seq_max_len = 50                     # keep the most recent 50 elements of each list
  config.data.shared_path_fraction = 0.05          # 5 % of training rows train the unseen-scenario path
  # Model: MI-DPG on a small MLP.
  config.model = models.model_config('midpg', hidden=(64, 32))
  # Training: epochs, not a step budget, so any data size trains to its validation optimum: up to
  # 12 epochs, validation every half epoch, stop after 4 without a gain in validation wAUC, the
  # best-validation parameters for the test (the `converged` table recipe, deres_jax/multiscenario/table.py).
  config.train.update(batch_size=256, num_epochs=12.0, log_every=10)
  config.eval.update(every_epochs=0.5, patience=4, restore_best=True, batch_size=4096)
  config.optim.weight_decay = 1e-5                 # Adam + L2 1e-5 (Scenario-Wise Rec's protocol)
  # The embedding L2 from the data size: lambda = 100 / (training rows), a fixed Gaussian prior on the
  # embeddings (train/regularization.py). On the Amazon three-category table, 3 seeds: test wAUC
  # +0.015 to +0.026 for every model over none (docs/multiscenario.md).
  config.optim.embed_l2_prior = 100.0
  config.ckpt.every_steps = 1000
  return config
