"""Amazon 2014 5-core Beauty / Sports_and_Outdoors / Toys_and_Games as three scenarios (a standard
multi-domain construction; Scenario-Wise Rec builds its Amazon set from three categories the same way).

  python benchmarks/make_amazon_flat_csv.py --categories=Beauty,Sports_and_Outdoors,Toys_and_Games \
      --user_fraction=0.17 --out=/tmp/amz/ms.csv
  python launch/train.py --config=configs/multiscenario/amazon.py --workdir=/tmp/ms_amazon \
      --config.data.train_file=/tmp/amz/ms.csv

The CSV (about 199k rows: 61k Beauty, 88k Sports, 50k Toys at 17 % of each category's users):
every interaction after a user's first is a click, each with one uniformly drawn item the user
never touched as a non-click; fields are the item, its attribute ids (S3-Rec's category path
and brand), the previous item, its last attribute and the item before it, every id prefixed by
its category. The file is the BYO multi-scenario schema (configs/multiscenario/byo_csv.py).
"""
from deres_jax.multiscenario import models
from deres_jax.multiscenario.config import base_config


def get_config(arg=None):
  del arg  # one variant
  config = base_config()
  # Data: the BYO schema of the --categories CSV, split 8:1:1 by user.
  config.data.name = 'csv'
  config.data.format = ''                          # the schema below
  config.data.train_file = '/tmp/amz/ms.csv'       # benchmarks/make_amazon_flat_csv.py --categories=...
  config.data.scenario_column = 'domain'           # the category: Beauty, Sports_and_Outdoors, Toys_and_Games
  config.data.label_columns = ('click',)           # a real next interaction (1) or a sampled unseen item (0)
  config.data.target = 'click'
  config.data.task = 'ctr'                         # no conversion label
  # The user id is the split's group, not a feature: with a user-grouped split every test user is
  # unseen (its id would be OOV at test only); the user side is the previous items.
  config.data.categorical_columns = ('item', 'a0', 'a1', 'alast', 'prev', 'prev_alast', 'prev2')
  config.data.dense_columns = ()
  config.data.group_column = 'user'                # a user's rows never sit in two splits
  config.data.sep = ','
  config.data.header = True
  config.data.seed = 0                             # the 8:1:1 split
  # Model: MI-DPG on a 64-32 MLP (the table runs every model on it).
  config.model = models.model_config('midpg', embed_dim=8, hidden=(64, 32))
  # Training: early stopping on validation wAUC, best-validation parameters for the test.
  config.train.update(batch_size=512, num_epochs=12.0, log_every=100)
  config.eval.update(every_epochs=0.5, patience=4, restore_best=True, batch_size=8192)
  config.optim.weight_decay = 1e-5                 # Adam + L2 1e-5 (Scenario-Wise Rec's protocol)
  config.optim.embed_l2_prior = 100.0              # embedding L2 = 100 / training rows (the table's 'converged')
  config.ckpt.every_steps = 0
  return config
