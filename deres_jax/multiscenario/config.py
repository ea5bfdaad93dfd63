"""The multi-scenario base config (every field, its default and meaning) and its validation.

The optimizer and the loop's sections (train, eval, mesh, ckpt) come from `deres_jax/config.py`,
so every family has the same fields with the same meaning; `family = 'multiscenario'` picks
multiscenario/family.py for the one training loop (train/trainer.py).
"""
import ml_collections

from deres_jax import config as ctr_config
from deres_jax.multiscenario import models

MONITORS = ('wauc', 'auc', 'logloss')
CHOICES = dict(ctr_config.LOOP_CHOICES, **{'eval.monitor': MONITORS})


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.family = 'multiscenario'      # the family (train/family.py): multiscenario/family.py
  c.seed = 0                      # parameter init, dropout, data order
  c.compute_dtype = 'float32'     # 'float32' | 'bfloat16' activations

  # Data.
  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'       # a key of deres_jax.multiscenario.DATASETS
  c.data.seed = 0                 # synthetic label model and rows; csv: the 8:1:1 split
  c.data.target = 'purchase'      # label trained on: a label name, or 'ctcvr' (click * purchase)
  c.data.task = ''                # '' = data.target | 'ctr' | 'cvr' (clicked rows only, train and eval) | 'ctcvr'
  c.data.shared_path_fraction = 0.0  # training rows routed to the shared path (unseen-scenario id S)
  c.data.num_train = 60_000       # synthetic: rows per split
  c.data.num_val = 10_000
  c.data.num_test = 10_000
  c.data.scenario_shares = (0.55, 0.3, 0.13, 0.02)  # synthetic: rows per scenario, large to tiny
  c.data.specific_share = (0.3, 0.6)  # synthetic: scenario-specific variance share (click, purchase)
  c.data.format = 'douban'        # csv: a preset of multiscenario.samples.FORMATS, '' = the schema below
  c.data.scenario_column = ''     # csv, format '': the scenario column
  c.data.label_columns = ()       # csv, format '': 0/1 label columns (e.g. ('click', 'buy'))
  c.data.categorical_columns = ()  # csv, format '': columns encoded by a training-rows vocabulary
  c.data.dense_columns = ()       # csv, format '': numeric columns (empty/unparsable = missing)
  c.data.group_column = ''        # csv: session/user column; splits keep each group whole
  c.data.sep = ','                # csv, format '': field separator
  c.data.header = True            # csv, format '': the first line names the columns
  c.data.columns = ()             # csv, format '' and header=False: the column names
  c.data.sequence_columns = ()    # csv, format '': list columns ('12|45|78', oldest first): behaviour histories
  c.data.seq_shared = ()          # csv: per list column, the categorical column whose ids it shares, or ''
  c.data.seq_sep = '|'            # csv: separator of a list's elements (one character, not data.sep)
  c.data.seq_max_len = 50         # csv: L, the most recent L elements of a list are kept
  c.data.train_file = ''          # csv: training file (or the one file split 8:1:1 by data.seed)
  c.data.val_file = ''            # csv: validation file ('' = split train_file)
  c.data.test_file = ''           # csv: test file
  c.data.path = ''                # aliexpress: the folder holding AliExpress_<CC>/{train,test}.csv
  c.data.countries = 'NL,ES,FR,US,RU'  # aliexpress: the countries (= scenarios) to read
  c.data.max_rows = 0             # csv/aliexpress: first rows kept per file (0 = all; files are read into memory)

  # Model: the fields of multiscenario.models.MODELS[name] (python -m deres_jax.multiscenario.models).
  c.model = models.model_config('midpg')

  # Optimizer: the shared section (deres_jax/config.py), same fields and meaning.
  c.optim = ctr_config.optim_section()

  # Training, evaluation (per-scenario AUC/logloss on the validation split, best model by
  # `eval.monitor`), sharding and checkpointing: the loop's sections, shared by every family.
  ctr_config.add_loop_sections(c, monitor='wauc', batch_size=512, eval_batch_size=4096)
  c.train.num_steps, c.train.log_every = 2000, 100
  c.eval.every_steps = 500
  return c


def validate(config, num_devices: int | None = None):
  """Raises ConfigError with one sentence on the first problem; returns the config."""
  ctr_config.validate_sections(config, base_config(), CHOICES, num_devices)
  try:
    models.check(config.model)
  except ValueError as e:
    raise ctr_config.ConfigError(str(e)) from None
  return config
