"""The base config (every field, its default and meaning) and its validation.

Experiment files in `configs/` start from `base_config()` and override a few fields. Every
open design choice of our DeRes reconstruction (research/deres.md §7.6, labelled A1..A12)
is a field here whose comment says what the paper leaves open; defaults follow §7.7.

`validate(config)` runs before any data loading or compilation and raises `ConfigError`
with one sentence per problem: unknown keys, wrong types, impossible combinations.
"""
import difflib

import ml_collections

from deres_jax.models import connectors


class ConfigError(ValueError):
  """A config that cannot run; the message names the field and what to do."""


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0                      # seeds parameter init, dropout and the shuffling of the data
  c.compute_dtype = 'float32'     # activations dtype: 'float32' | 'bfloat16' (params stay float32)

  # Data.
  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'       # a key of deres_jax.data.DATASETS
  c.data.path = ''                # directory of prepared real data (real datasets only)
  c.data.seed = 0                 # synthetic: seed of the hidden label model and of the rows
  c.data.num_train = 200_000      # synthetic: rows per split
  c.data.num_val = 25_000
  c.data.num_test = 25_000
  c.data.max_vocab = 100_000      # synthetic: largest categorical vocabulary (smallest is 10)
  # Preparation of real data (launch/prepare_data.py; recorded in <path>/schema.json).
  c.data.min_count = 10           # train occurrences a category needs for its own id (BARS: Criteo 10, Avazu 2)
  c.data.split = (0.8, 0.1, 0.1)  # train/val/test fractions of the random per-row split
  c.data.split_seed = 2018        # seed of the split (a hash of seed, file and line number)
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
  c.data.std_first = 1.0          # synthetic: std of the first-order part of the true logit
  c.data.std_pair = 0.8           # synthetic: std of the pairwise part
  c.data.std_three = 0.7          # synthetic: std of the 3-way part
  c.data.std_four = 0.6           # synthetic: std of the 4-way part

  # Model (deres_jax.models.MODELS[name]; fields below are CTRTransformer's).
  c.model = ml_collections.ConfigDict()
  c.model.name = 'transformer'    # 'transformer' | 'logreg' | 'dcnv2'
  c.model.embed_dim = 16          # E: embedding size of every field
  c.model.tokenizer = 'field'     # 'field': one token per field; 'group': RankMixer split into num_tokens
  c.model.num_tokens = 8          # T when tokenizer='group'
  c.model.dense_transform = 'log1p'  # dense values x -> sign(x) log(1+|x|) before embedding; or 'none'
  c.model.depth = 2               # L: Transformer blocks (attention + per-token FFN each)
  c.model.width = 32              # D: token width
  c.model.num_heads = 4           # attention heads; must divide width
  c.model.ffn_mult = 2            # FFN hidden size = ffn_mult * width
  c.model.qkv = 'token'           # 'token': OneTrans token-specific Q/K/V/O; 'shared'
  c.model.ffn = 'token'           # 'token': per-token FFN (RankMixer/OneTrans); 'shared'
  c.model.dropout = 0.0           # dropout on sublayer outputs
  # False: blocks unrolled (fastest steps; compile time grows with depth). True: nn.scan over
  # stacked blocks, compile time independent of depth, for deep stacks (depth >~ 16). On CPU
  # unrolled steps are faster at the paper's depths (figures in benchmarks/README.md).
  c.model.scan_layers = False
  c.model.head_pool = 'flatten'   # 'flatten' the T tokens (T*D) or 'mean'-pool them (D) for the head
  c.model.head_hidden = (256,)    # hidden sizes of the head MLP
  # Residual connector: 'prenorm' (identity skip), 'attnres' (Attention Residuals), 'deres'.
  c.model.connector = 'deres'
  # A1: what a connected "layer" is. 'sublayer': every attention and every FFN sublayer, as in
  # AttnRes (two connectors per Transformer block); 'block': one per Transformer block.
  c.model.layer_unit = 'sublayer'
  # A2: connected units per AttnRes block (1 = Full AttnRes). 4 sublayers = 2 Transformer blocks
  # per AttnRes block (§7.7). The current block's partial sum is always a source (AttnRes §3.2).
  c.model.block_size = 4
  # A3: what a block stores as its value: 'output' = sum of its units' outputs (AttnRes);
  # 'hidden' = the stream h at the block's end. The token embedding is always source 0.
  c.model.value = 'output'
  # A6: weights over depth: 'auto' (softmax for attnres, silu for deres), 'softmax',
  # 'silu' (Pointwise AttnRes) or 'sigmoid' (AttnRes's ablation).
  c.model.depth_weights = 'auto'
  # A6: pointwise weights divided by the number of visible sources ('num_sources', HSTU's 1/N)
  # or left unnormalised ('none'). Ignored by softmax.
  c.model.pointwise_norm = 'num_sources'
  c.model.key_norm = True         # A6: RMSNorm on the keys (never on the values), as in AttnRes
  c.model.query = 'shared'        # A7: pseudo-query per unit 'shared' by tokens, or per 'token'
  # A4: merge of the Identity path h and the AttnRes path a, per hidden dimension:
  # 'add': h + g*a (starts exactly as PreNorm with SiLU weights); 'convex': g*h + (1-g)*a.
  c.model.merge = 'add'
  # A5: the gate g = sigmoid(theta): 'vector' (theta in R^D per unit, the abstract's
  # "vector-wise gate"), 'scalar' (one per unit) or 'none' (g = 1). Static, input-independent.
  c.model.gate = 'vector'
  c.model.gate_init = 0.0         # A5: initial theta (0 -> g = 0.5)
  # DCNv2 (name='dcnv2') only.
  c.model.num_cross = 3           # cross layers
  c.model.dnn_hidden = (400, 400, 400)  # deep tower
  c.model.structure = 'parallel'  # 'parallel' | 'stacked'

  # Optimizer.
  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'           # dense parameters: 'adam' | 'adamw' | 'adagrad' | 'sgd' | 'rmsprop'
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 0.0      # adamw only
  c.optim.schedule = 'constant'   # 'constant' | 'cosine' (decay to 0 over train.num_steps)
  c.optim.warmup_steps = 0
  c.optim.grad_clip = 0.0         # global-norm clipping, 0 = off
  c.optim.embed_name = 'adam'     # optimizer of the embedding tables (same choices)
  c.optim.embed_learning_rate = 1e-3
  c.optim.embed_l2 = 0.0          # L2 on the embeddings looked up in a batch, per example

  # Training.
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 1024       # global batch, split over the 'data' mesh axis
  c.train.num_steps = 1000
  c.train.log_every = 50          # steps between lines of metrics.jsonl
  c.train.nonfinite = 'stop'      # a non-finite loss/gradient: 'stop' with a message, or 'skip' the update
  c.train.progress = True         # show a progress bar
  c.train.transfer_guard = 'disallow'  # implicit host<->device transfers in the loop: 'disallow' | 'log' | 'allow'

  # Evaluation and early stopping (on validation AUC).
  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 250        # validation every this many steps (and at the end)
  c.eval.batch_size = 8192
  c.eval.patience = 0             # stop after this many evaluations without improvement; 0 = never
  c.eval.restore_best = True      # evaluate the test split with the best-validation parameters

  # Sharding: mesh axes (name, size; -1 = all remaining devices) and logical-axis rules.
  c.mesh = (('data', -1), ('model', 1))
  c.sharding_rules = (('vocab', None),)  # e.g. (('vocab', 'model'),) row-shards embedding tables

  # Checkpointing (Orbax, in WORKDIR/checkpoints; rerunning the command resumes).
  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 500        # 0 = only at the end
  c.ckpt.max_to_keep = 2

  # Baseline trained on the same data after the main model, reported beside it.
  c.baseline = ml_collections.ConfigDict()
  c.baseline.logreg = False
  c.baseline.learning_rate = 0.01
  c.baseline.num_steps = 0        # 0 = same as train.num_steps
  return c


CHOICES = {
    'compute_dtype': ('float32', 'bfloat16'),
    'model.name': ('transformer', 'logreg', 'dcnv2'),
    'model.structure': ('parallel', 'stacked'),
    'model.tokenizer': ('field', 'group'),
    'model.dense_transform': ('log1p', 'none'),
    'model.qkv': ('token', 'shared'),
    'model.ffn': ('token', 'shared'),
    'model.head_pool': ('flatten', 'mean'),
    'model.connector': connectors.KINDS,
    'model.layer_unit': ('sublayer', 'block'),
    'model.value': ('output', 'hidden'),
    'model.depth_weights': ('auto', 'softmax', 'silu', 'sigmoid'),
    'model.pointwise_norm': ('num_sources', 'none'),
    'model.query': ('shared', 'token'),
    'model.merge': ('add', 'convex'),
    'model.gate': ('vector', 'scalar', 'none'),
    'optim.name': ('adam', 'adamw', 'adagrad', 'sgd', 'rmsprop'),
    'optim.embed_name': ('adam', 'adamw', 'adagrad', 'sgd', 'rmsprop'),
    'optim.schedule': ('constant', 'cosine'),
    'train.nonfinite': ('stop', 'skip'),
    'train.transfer_guard': ('disallow', 'log', 'allow'),
}


def _flatten(cfg, prefix=''):
  out = {}
  for k, v in cfg.items():
    key = f'{prefix}{k}'
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      out.update(_flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def validate(config, num_devices: int | None = None):
  """Raises ConfigError on the first problem; returns the config unchanged otherwise."""
  base = _flatten(base_config())
  given = _flatten(config)
  for key in given:
    if key not in base:
      # The same field in another section, or a typo of a field ('model.depht').
      close = ([k for k in base if k.split('.')[-1] == key.split('.')[-1]] or
               difflib.get_close_matches(key, list(base), n=1))
      hint = f' Did you mean {close[0]!r}?' if close else ''
      raise ConfigError(f'Unknown config key {key!r}.{hint}')
  for key, value in given.items():
    want = base[key]
    if isinstance(want, bool) or isinstance(value, bool):
      ok = isinstance(value, bool) == isinstance(want, bool)
    elif isinstance(want, float):
      ok = isinstance(value, (int, float))
    elif isinstance(want, (tuple, list)):
      ok = isinstance(value, (tuple, list))
    elif want is None:
      ok = True
    else:
      ok = isinstance(value, type(want))
    if not ok:
      raise ConfigError(f'config.{key} must be a {type(want).__name__}, got {value!r} '
                        f'({type(value).__name__}).')
  for key, choices in CHOICES.items():
    if key in given and given[key] not in choices:
      raise ConfigError(f'config.{key}={given[key]!r} is not one of {list(choices)}.')
  m = config.model
  positive = ['model.depth', 'model.width', 'model.num_heads', 'model.embed_dim',
              'model.block_size', 'model.num_tokens', 'model.ffn_mult', 'train.batch_size',
              'train.num_steps', 'train.log_every', 'eval.every_steps', 'eval.batch_size']
  for key in positive:
    if key in given and given[key] <= 0:
      raise ConfigError(f'config.{key} must be positive, got {given[key]}.')
  if m.name == 'transformer':
    if m.width % m.num_heads:
      raise ConfigError(f'config.model.num_heads={m.num_heads} does not divide '
                        f'config.model.width={m.width}.')
    units = m.depth * (2 if m.layer_unit == 'sublayer' else 1)
    if m.connector != 'prenorm' and m.block_size > units:
      raise ConfigError(f'config.model.block_size={m.block_size} is larger than the {units} '
                        f'connected units (depth={m.depth}, layer_unit={m.layer_unit!r}).')
  if not 0.0 <= config.model.dropout < 1.0:
    raise ConfigError(f'config.model.dropout must be in [0, 1), got {config.model.dropout}.')
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
    for key in ('train.batch_size', 'eval.batch_size'):
      if given[key] % data:
        raise ConfigError(f'config.{key}={given[key]} is not divisible by the data axis of size '
                          f'{data}.')
  return config


def lock(config):
  """Locks the config so that a later typo'd assignment raises."""
  config.lock()
  return config

