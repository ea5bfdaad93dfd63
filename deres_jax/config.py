"""The base config (every field, its default and meaning) and its validation.

Experiment files in `configs/` start from `base_config()` and override a few fields. Every
open design choice of our DeRes reconstruction (research/deres.md §7.6, labelled A1..A12)
is a field here whose comment says what the paper leaves open; defaults follow §7.7.

`validate(config)` runs before any data loading or compilation and raises `ConfigError`
with one sentence per problem: unknown keys, wrong types, impossible combinations.
"""
import difflib

import ml_collections

from deres_jax import models
from deres_jax.models import backbone as backbone_lib


class ConfigError(ValueError):
  """A config that cannot run; the message names the field and what to do."""


def optim_section() -> ml_collections.ConfigDict:
  """The optimizer fields (train/optim.py), the same for every family."""
  c = ml_collections.ConfigDict()
  c.name = 'adam'                 # dense parameters: 'adam' | 'adamw' | 'adagrad' | 'sgd' | 'rmsprop'
  c.learning_rate = 1e-3
  c.weight_decay = 0.0            # adamw: decoupled decay; adam: L2 in the gradient (torch.optim.Adam's); else unused
  c.schedule = 'constant'         # 'constant' | 'cosine' (decay to 0 over train.num_steps) | 'rsqrt' (T5/TIGER)
  c.warmup_steps = 0              # linear warm-up from 0 over this many steps
  c.hold_steps = 0                # rsqrt: the rate stays constant until this step, then lr * sqrt(hold / step)
  c.grad_clip = 0.0               # global-norm clipping, 0 = off
  c.embed_name = 'adam'           # optimizer of the embedding tables (same choices)
  c.embed_learning_rate = 1e-3
  c.embed_l2 = 0.0                # CTR: + embed_l2/2 * ||E||^2 (BARS/FuxiCTR; train/regularization.py)
  c.plateau_factor = 0.0          # > 0: both learning rates *= this after a validation without gain (FuxiCTR 0.1)
  c.embed_l2_rows = 'table'       # CTR: 'table' = whole tables every step (FuxiCTR); 'batch' = distinct rows looked up
  c.embed_l2_prior = 0.0          # CTR: > 0 sets embed_l2 = this / training rows (a Gaussian prior; regularization.py)
  return c


def add_loop_sections(c, monitor: str, batch_size: int = 1024, eval_batch_size: int = 8192):
  """Adds the training loop's sections (train/trainer.py), the same in every family:
  train, eval, mesh, sharding_rules, ckpt. `monitor` is the family's default eval.monitor."""
  # Training.
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = batch_size  # global batch, split over the 'data' mesh axis
  c.train.num_steps = 1000
  c.train.num_epochs = 0.0        # > 0: this many passes over the training examples instead of num_steps
  c.train.log_every = 50          # steps between lines of metrics.jsonl
  c.train.nonfinite = 'stop'      # a non-finite loss/gradient: 'stop' with a message, or 'skip' the update
  c.train.progress = True         # show a progress bar
  c.train.transfer_guard = 'disallow'  # implicit host<->device transfers in the loop: 'disallow' | 'log' | 'allow'

  # Evaluation and early stopping (on the monitored validation metric).
  c.eval = ml_collections.ConfigDict()
  c.eval.monitor = monitor        # validation metric for the best model and early stopping
  c.eval.every_steps = 250        # validation every this many steps (and at the end)
  c.eval.every_epochs = 0.0       # > 0: validation every this many epochs instead of every_steps
  c.eval.batch_size = eval_batch_size
  c.eval.patience = 0             # stop after this many evaluations without improvement; 0 = never
  c.eval.restore_best = True      # evaluate the test split with the best-validation parameters

  # Sharding: mesh axes (name, size; -1 = all remaining devices) and logical-axis rules.
  c.mesh = (('data', -1), ('model', 1))
  c.sharding_rules = (('vocab', None),)  # e.g. (('vocab', 'model'),) row-shards embedding tables

  # Checkpointing (Orbax, in WORKDIR/checkpoints; rerunning the command resumes).
  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 500        # 0 = only at the end
  c.ckpt.max_to_keep = 2
  return c


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.family = 'ctr'                # 'ctr' | 'multiscenario' | 'genrec' (train/family.py)
  c.seed = 0                      # seeds parameter init, dropout and the shuffling of the data
  c.compute_dtype = 'float32'     # activations dtype: 'float32' | 'bfloat16' (params stay float32)

  # Data.
  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'       # a key of deres_jax.data.DATASETS
  c.data.path = ''                # directory of prepared real data (real datasets only)
  c.data.sequences = 'keep'       # 'drop': ignore the sequence fields ('seq'), a history-blind baseline
  c.data.seed = 0                 # synthetic: seed of the hidden label model and of the rows
  c.data.num_train = 200_000      # synthetic: rows per split
  c.data.num_val = 25_000
  c.data.num_test = 25_000
  c.data.max_vocab = 100_000      # synthetic: largest categorical vocabulary (smallest is 10)
  # Preparation of real data (launch/prepare_data.py; recorded in <path>/schema.json).
  c.data.min_count = 10           # train occurrences a category needs for its own id (BARS: Criteo 10, Avazu 2)
  c.data.split = (0.8, 0.1, 0.1)  # train/val/test fractions of the random per-row split
  c.data.split_seed = 2018        # seed of the split (a hash of seed, file and line number)
  c.data.split_by = ''            # '' = that random split; 'time:<column>': earliest rows train, then val, test
  c.data.keep_dense = False       # Criteo: also keep I1..I13 as raw float 'dense' columns
  c.data.strict = False           # stop at the first bad input row instead of counting and skipping
  # Your own data (name='csv'): a CSV/TSV/Parquet schema; column names as in the file.
  c.data.csv_files = ()           # input files: .csv/.tsv/.txt (optionally .gz) or .parquet
  c.data.csv_columns = ()         # every column in file order; () = read from the header line
  c.data.csv_label = 'label'      # 0/1 label column
  c.data.csv_dense = ()           # numeric columns fed as dense values (NaN = missing)
  c.data.csv_categorical = ()     # columns encoded with a vocabulary (min_count, OOV id 0)
  c.data.csv_bucketed = ()        # integer columns turned into floor(ln(v)^2) categories
  c.data.csv_scenario = ''        # optional scenario column ('' = none)
  c.data.csv_sep = ','            # field separator: ',' or '\t' or any one character
  c.data.csv_header = True        # the first line of each text file holds the column names
  c.data.csv_sequence = ()        # list columns ('12|45|78', oldest first): behaviour histories -> 'seq'
  c.data.csv_seq_shared = ()      # per csv_sequence column: the csv_categorical column whose ids it shares, or ''
  c.data.csv_seq_sep = '|'        # separator of the elements of a list column (Parquet lists need none)
  c.data.csv_seq_max_len = 50     # L: keep the most recent L elements of each list (left-padded, -1)
  c.data.csv_val_files = ()       # validation files; if set (or csv_test_files): csv_files = train, split by file
  c.data.csv_test_files = ()      # test files (split by file, like csv_val_files)
  c.data.std_first = 1.0          # synthetic: std of the first-order part of the true logit
  c.data.std_pair = 0.8           # synthetic: std of the pairwise part
  c.data.std_three = 0.7          # synthetic: std of the 3-way part
  c.data.std_four = 0.6           # synthetic: std of the 4-way part

  # Model: the fields of models.MODELS[name] with its dataclass's defaults (README "Model zoo");
  # --config.model.name=<other> switches the section to that model's fields first.
  c.model = models.model_config('transformer')
  # The tokenizer a --config.model.name switch gives a zoo model ('' = its paper's: RankMixer
  # groups, OneTrans Auto-Split); configs/byo_csv.py sets 'autosplit' (docs/quality.md, issue 26).
  c.zoo_tokenizer = ''
  # Likewise its connector ('' = its paper's: RankMixer PostNorm, ...); byo_csv.py sets 'deres'.
  c.zoo_connector = ''

  # Optimizer.
  c.optim = optim_section()
  # Training, evaluation, sharding, checkpointing: the loop's sections (every family's).
  add_loop_sections(c, monitor='auc')
  # Industrial CTR metrics (train/metrics.py), reported beside AUC when the fields exist.
  c.eval.user_field = ''          # user field for GAUC; '' = auto (user_id/user/uid), 'none' = off
  c.eval.item_field = ''          # item field for tail-item AUC; '' = auto (item_id/item/iid), 'none'
  c.eval.tail_fraction = 0.2      # tail items: the least frequent 20 % of items by training count

  # Baseline trained on the same data after the main model, reported beside it.
  c.baseline = ml_collections.ConfigDict()
  c.baseline.logreg = False
  c.baseline.learning_rate = 0.01
  c.baseline.num_steps = 0        # 0 = same as train.num_steps
  return c


def _flatten(cfg, prefix=''):
  out = {}
  for k, v in cfg.items():
    key = f'{prefix}{k}'
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      out.update(_flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def _type_ok(value, want) -> bool:
  if isinstance(want, bool) or isinstance(value, bool):
    return isinstance(value, bool) == isinstance(want, bool)
  if isinstance(want, float):
    return isinstance(value, (int, float))
  if isinstance(want, (tuple, list)):
    return isinstance(value, (tuple, list))
  if want is None:
    return True
  return isinstance(value, type(want))


def validate_model(model_cfg):
  """Checks config.model against the chosen model's own fields, choices and check()."""
  if 'name' not in model_cfg:
    raise ConfigError(f'config.model.name is missing; choose one of {list(models.MODELS)}.')
  name = model_cfg.name
  try:
    known = models.fields(name)
  except models.UnknownModelError as e:
    raise ConfigError(str(e)) from None
  for key, value in model_cfg.items():
    if key == 'name':
      continue
    if key not in known:
      raise ConfigError(models.unknown_field_message(name, key))
    want = known[key][0]
    if not _type_ok(value, want):
      raise ConfigError(f'config.model.{key} must be a {type(want).__name__} for model '
                        f'{name!r}, got {value!r} ({type(value).__name__}).')
  for key, allowed in models.choices(name).items():
    if key in model_cfg and model_cfg[key] not in allowed:
      raise ConfigError(f'config.model.{key}={model_cfg[key]!r} is not one of {list(allowed)} '
                        f'(model {name!r}).')
  for key, value in model_cfg.items():  # sizes and counts: a 0 or negative one never runs
    if (isinstance(value, int) and not isinstance(value, bool) and value <= 0 and
        isinstance(known[key][0], int) and known[key][0] > 0 and key not in _MAY_BE_ZERO):
      raise ConfigError(f'config.model.{key} must be positive, got {value} (model {name!r}).')
  dropout = model_cfg.get('dropout', 0.0)
  if not 0.0 <= dropout < 1.0:
    raise ConfigError(f'config.model.dropout must be in [0, 1), got {dropout}.')
  # The model's own cross-field checks, on a module built for a stand-in schema.
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in model_cfg.items() if k != 'name'}
  try:
    models.get_class(name)(vocab_sizes=(8, 8), num_dense=1, **kwargs).check()
  except ValueError as e:
    raise ConfigError(f'config.model (model {name!r}): {e}') from None


# Integer model fields with a positive default for which 0 still means something.
_MAY_BE_ZERO = ('embed_cross', 'skip_every', 'num_cross', 'low_rank', 'pyramid_min_tokens', 'aux_every')


LOOP_CHOICES = {
    'compute_dtype': ('float32', 'bfloat16'),
    'optim.name': ('adam', 'adamw', 'adagrad', 'sgd', 'rmsprop'),
    'optim.embed_name': ('adam', 'adamw', 'adagrad', 'sgd', 'rmsprop'),
    'optim.schedule': ('constant', 'cosine', 'rsqrt'),
    'optim.embed_l2_rows': ('table', 'batch'),
    'train.nonfinite': ('stop', 'skip'),
    'train.transfer_guard': ('disallow', 'log', 'allow'),
}


CHOICES = dict(LOOP_CHOICES, **{'eval.monitor': ('auc', 'logloss'),
                                 'zoo_tokenizer': ('', 'field', 'group', 'autosplit'),
                                 'zoo_connector': ('',) + backbone_lib.KINDS})


def validate(config, num_devices: int | None = None):
  """Raises ConfigError on the first problem of a CTR config; returns it unchanged otherwise."""
  validate_sections(config, base_config(), CHOICES, num_devices)
  validate_model(config.model)
  return config


def validate_sections(config, base, choices, num_devices: int | None = None):
  """The checks every family shares, against the family's full `base` config (model aside).

  Unknown keys (with a did-you-mean), wrong types, values outside `choices`, sizes that must be
  positive, the mesh against the devices and batch sizes against the data axis: ConfigError
  with one sentence naming the field.
  """
  base = _flatten(base)
  base = {k: v for k, v in base.items() if not k.startswith('model.')}
  given = _flatten(config)
  for key in given:
    if key not in base and not key.startswith('model.'):
      # The same field in another section, or a typo of a field ('train.num_step').
      close = ([k for k in base if k.split('.')[-1] == key.split('.')[-1]] or
               difflib.get_close_matches(key, list(base), n=1))
      hint = f' Did you mean {close[0]!r}?' if close else ''
      raise ConfigError(f'Unknown config key {key!r}.{hint}')
  for key, value in given.items():
    if key.startswith('model.'):
      continue
    want = base[key]
    if not _type_ok(value, want):
      raise ConfigError(f'config.{key} must be a {type(want).__name__}, got {value!r} '
                        f'({type(value).__name__}).')
  for key, allowed in choices.items():
    if key in given and given[key] not in allowed:
      raise ConfigError(f'config.{key}={given[key]!r} is not one of {list(allowed)}.')
  positive = ['train.batch_size', 'train.num_steps', 'train.log_every', 'eval.every_steps',
              'eval.batch_size']
  for key in positive:
    if key in given and given[key] <= 0:
      raise ConfigError(f'config.{key} must be positive, got {given[key]}.')
  for key in ('train.num_epochs', 'eval.every_epochs'):
    if given.get(key, 0) < 0:
      raise ConfigError(f'config.{key} must be >= 0 (0 = use the steps field), got {given[key]}.')
  if not 0.0 <= config.optim.plateau_factor < 1.0:
    raise ConfigError('config.optim.plateau_factor must be in [0, 1) (0 = off, FuxiCTR uses 0.1), '
                      f'got {config.optim.plateau_factor}.')
  if min(config.optim.get('embed_l2_prior', 0.0), config.optim.embed_l2) < 0:
    raise ConfigError('config.optim.embed_l2 and config.optim.embed_l2_prior must be >= 0.')
  from deres_jax.train import regularization  # pylint: disable=g-import-not-at-top
  regularization.effective_embed_l2(config.optim, 1)  # both set: one ConfigError naming the two ways out
  if config.ckpt.every_steps < 0:
    raise ConfigError('config.ckpt.every_steps must be >= 0 (0 = only at the end).')
  if config.ckpt.max_to_keep < 1:  # Orbax would delete every checkpoint, the newest included
    raise ConfigError(f'config.ckpt.max_to_keep must be at least 1, got {config.ckpt.max_to_keep}.')
  # Mesh.
  names = [a[0] for a in config.mesh]
  if sorted(names) != ['data', 'model']:
    raise ConfigError(f"config.mesh must name the axes 'data' and 'model', got {names}.")
  sizes = [a[1] for a in config.mesh]
  if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f'config.mesh sizes must be positive with at most one -1, got {sizes}.')
  if num_devices is not None:
    fixed = 1
    for s in sizes:
      fixed *= s if s > 0 else 1
    if (-1 in sizes and num_devices % fixed) or (-1 not in sizes and fixed != num_devices):
      raise ConfigError(f'config.mesh={tuple(config.mesh)} does not match the {num_devices} '
                        'available devices.')
    data = dict(config.mesh)['data']
    data = num_devices // fixed if data == -1 else data
    model_axis = dict(config.mesh)['model']
    model_axis = num_devices // fixed if model_axis == -1 else model_axis
    vocab_sharded = any(tuple(r)[:1] == ('vocab',) and 'model' in tuple(r)[1:]
                        for r in config.sharding_rules)
    if vocab_sharded and 8 % model_axis:  # tokenizer.table_layout pads the rows to a multiple of 8
      raise ConfigError(f'config.mesh has a model axis of size {model_axis}, which does not divide '
                        "the embedding table's rows (padded to a multiple of 8) sharded over it by "
                        "('vocab', 'model'): use a model axis of 1, 2, 4 or 8.")
    for key in ('train.batch_size', 'eval.batch_size'):
      if given[key] % data:
        raise ConfigError(f'config.{key}={given[key]} is not divisible by the data axis of size '
                          f'{data}.')
  return config


def split_model_flags(argv):
  """Takes the --config.model.<field>=<value> flags out of argv: (other argv, [(field, text)]).

  They are applied after the config file by `apply_model_overrides`, because which fields
  exist depends on --config.model.name.
  """
  rest, pairs, i = [], [], 0
  prefix = '--config.model.'
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(prefix):
      key, eq, text = arg[len(prefix):].partition('=')
      if not eq and i + 1 < len(argv):  # '--config.model.depth 8'
        i += 1
        text = argv[i]
      pairs.append((key, text))
    else:
      rest.append(arg)
    i += 1
  return rest, pairs


def apply_model_overrides(config, pairs):
  """Applies [(field, text)] model overrides: name first (switching the section), then fields.

  A switch keeps `config.zoo_tokenizer` and `config.zoo_connector` (if set) as the new model's
  tokenizer and connector when the model offers them; --config.model.tokenizer/connector flags
  still win. Raises ConfigError with one sentence for
  an unknown model, a field the chosen model does not have, or a value that does not parse.
  """
  names = [text for key, text in pairs if key == 'name']
  with config.unlocked():
    if names and names[-1] != config.model.get('name'):
      try:
        config.model = models.switch(config.model, names[-1])
      except models.UnknownModelError as e:
        raise ConfigError(str(e)) from None
      for field in ('tokenizer', 'connector'):
        value = config.get(f'zoo_{field}', '')
        if value and value in models.choices(names[-1]).get(field, ()):
          config.model[field] = value
    name = config.model.name
    known = models.fields(name)
    for key, text in pairs:
      if key == 'name':
        continue
      if key not in known:
        raise ConfigError(models.unknown_field_message(name, key))
      try:
        value = models.parse_value(name, key, text)
        with config.model.ignore_type():
          config.model[key] = value
      except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
  return config


def lock(config):
  """Locks the config so that a later typo'd assignment raises."""
  config.lock()
  return config


def _module_from_path(path: str, what: str, prefix: str):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise ConfigError(f'the {what} {path!r} does not exist.')
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f'{prefix}{name}', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def load_file(path: str, arg=None):
  """`get_config(arg)` of a config file, as `--config=path[:arg]` loads it; any family.

  Config files are loaded by path (ml_collections' config_flags does the same), so configs/
  needs no package imports: a file that builds on another calls
  `load_file(os.path.join(os.path.dirname(__file__), 'other.py'), arg)`. `path` may end in
  ':arg' as on the command line; without an arg, get_config() takes its own default.
  """
  import os  # pylint: disable=g-import-not-at-top
  if arg is None and ':' in os.path.basename(path):
    path, arg = path.rsplit(':', 1)
  mod = _module_from_path(path, 'config file', 'deres_jax_config_')
  return mod.get_config() if arg is None else mod.get_config(arg)


def load_table(path: str):
  """A paper table's module (configs/tables/*.py: ROWS, BASELINE, base_config, ...), by path."""
  return _module_from_path(path, 'table file', 'deres_jax_table_')
