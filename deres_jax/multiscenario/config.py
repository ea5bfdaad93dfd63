"""The multi-scenario base config (every field, its default and meaning) and its validation.

Sections as in `deres_jax/config.py`; `optim` is the CTR optimizer section itself (imported,
so the two families keep one set of optimizer fields). `family = 'multiscenario'` is what
launch/train.py dispatches on.
"""
import jax
import ml_collections

from deres_jax import config as ctr_config
from deres_jax.multiscenario import models

MONITORS = ('wauc', 'auc', 'logloss')


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.family = 'multiscenario'      # launch/train.py hands such configs to multiscenario.trainer
  c.seed = 0                      # parameter init, dropout, data order
  c.compute_dtype = 'float32'     # 'float32' | 'bfloat16' activations

  # Data.
  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'       # a key of deres_jax.multiscenario.DATASETS
  c.data.seed = 0                 # synthetic label model and rows; csv: the 8:1:1 split
  c.data.target = 'purchase'      # label trained on: a label name, or 'ctcvr' (click * purchase)
  c.data.num_train = 60_000       # synthetic: rows per split
  c.data.num_val = 10_000
  c.data.num_test = 10_000
  c.data.scenario_shares = (0.55, 0.3, 0.13, 0.02)  # synthetic: rows per scenario, large to tiny
  c.data.specific_share = (0.3, 0.6)  # synthetic: scenario-specific variance share (click, purchase)
  c.data.format = 'douban'        # csv: one of multiscenario.samples.FORMATS
  c.data.train_file = ''          # csv: training file (or the one file split 8:1:1 by data.seed)
  c.data.val_file = ''            # csv: validation file ('' = split train_file)
  c.data.test_file = ''           # csv: test file
  c.data.data_dir = ''            # aliexpress: the folder holding AliExpress_<CC>/{train,test}.csv
  c.data.countries = 'NL,ES,FR,US,RU'  # aliexpress: the countries (= scenarios) to read
  c.data.max_rows = 0             # csv/aliexpress: first rows kept per file (0 = all; files are read into memory)

  # Model: the fields of multiscenario.models.MODELS[name] (python -m deres_jax.multiscenario.models).
  c.model = models.model_config('midpg')

  # Optimizer: the CTR section (deres_jax/config.py), same fields and meaning.
  c.optim = ctr_config.base_config().optim

  # Training.
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 512        # global batch, split over the 'data' mesh axis
  c.train.num_steps = 2000
  c.train.log_every = 100         # steps between lines of metrics.jsonl

  # Evaluation: per-scenario AUC/logloss on the validation split, best model by `monitor`.
  c.eval = ml_collections.ConfigDict()
  c.eval.monitor = 'wauc'         # 'wauc' (sample-weighted mean of per-scenario AUC) | 'auc' | 'logloss'
  c.eval.every_steps = 500
  c.eval.batch_size = 4096
  c.eval.restore_best = True      # test metrics with the best-validation parameters

  # Sharding.
  c.mesh = (('data', -1), ('model', 1))
  c.sharding_rules = (('vocab', None),)

  # Checkpointing (WORKDIR/checkpoints; rerunning the command resumes exactly).
  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 500        # 0 = only at the end
  c.ckpt.max_to_keep = 2
  return c


def validate(config, num_devices: int | None = None):
  """Raises ValueError with one sentence on the first problem; returns the config."""
  base = base_config()
  for section in ('data', 'train', 'eval', 'ckpt', 'optim'):
    for key in config[section]:
      if key not in base[section]:
        raise ValueError(f'Unknown config key {section}.{key!r}; the {section} fields are '
                         f'{list(base[section])}.')
  models.check(config.model)
  if config.eval.monitor not in MONITORS:
    raise ValueError(f'config.eval.monitor={config.eval.monitor!r} is not one of {list(MONITORS)}.')
  for key in ('batch_size', 'num_steps', 'log_every'):
    if config.train[key] <= 0:
      raise ValueError(f'config.train.{key} must be positive, got {config.train[key]}.')
  if num_devices is not None:
    data = num_devices // max(1, dict(config.mesh)['model'])
    if (config.model.name == 'midpg' and config.model.get('mi_negatives') == 'batch' and
        config.model.get('mi_estimator') != 'none' and data > 1 and jax.default_backend() == 'cpu'):
      raise ValueError('config.model.mi_negatives="batch" all-gathers the batch across the '
                       f'{data} CPU devices, which can deadlock XLA:CPU collectives; use '
                       'mi_negatives="scenarios" or one device (models/midpg.py).')
    for key in ('train', 'eval'):
      if config[key].batch_size % data:
        raise ValueError(f'config.{key}.batch_size={config[key].batch_size} is not divisible by '
                         f'the data axis of size {data}.')
  return config
