"""The model zoo. `MODELS` maps `config.model.name` to a Flax module class; `build` makes one.

Each model's config section holds exactly that model's fields: `model_config(name)` reads
them, with their defaults and comments, from the model's own dataclass, so no hand-kept list
can drift from the code. Fields filled from the data (`vocab_sizes`, `num_dense`) and
internal ones (`dtype`, `table_pad`) are not config fields.

Every model maps a batch to `(logits [B], aux)`; `aux['embed_sq']` [B] is the squared norm of
the looked-up embeddings and `aux['losses']` (optional) a dict of named scalar auxiliary
losses that the train step adds to the loss and logs as `train/loss/<name>`. Every model has
`check()` (raises ValueError on impossible field combinations) and `flops_per_example()`
(analytic forward FLOPs by part, see flops.py).
"""
import ast
import dataclasses
import functools
import inspect
import re

import ml_collections

from deres_jax.models.dcnv2 import DCNv2
from deres_jax.models.din import DIN
from deres_jax.models.dnn import DNN
from deres_jax.models.finalnet import FinalNet
from deres_jax.models.hiformer import HiFormer
from deres_jax.models.logreg import LogisticRegression
from deres_jax.models.onetrans import OneTrans
from deres_jax.models.rankmixer import RankMixer
from deres_jax.models.tokenmixer_large import TokenMixerLarge
from deres_jax.models.transformer import CTRTransformer
from deres_jax.models.unimixer import UniMixer
from deres_jax.models.wukong import Wukong

# config.model.name -> model class (each in its own module, named after the model).
MODELS = {
    'transformer': CTRTransformer,        # CTR Transformer, pluggable connector (default DeRes)
    'onetrans': OneTrans,                 # OneTrans: Auto-Split tokens, mixed params, pyramid
    'rankmixer': RankMixer,               # RankMixer: parameter-free token mixing + per-token FFN
    'tokenmixer_large': TokenMixerLarge,  # TokenMixer-Large: mix-and-revert, pSwiGLU, aux loss
    'unimixer': UniMixer,                 # UniMixer: Sinkhorn global/local mixing, SiameseNorm
    'hiformer': HiFormer,                 # HiFormer: heterogeneous attention, low-rank projection
    'wukong': Wukong,                     # Wukong: stacked FM blocks + linear compression
    'dcnv2': DCNv2,                       # DCNv2: cross network + DNN
    'finalnet': FinalNet,                 # FinalNet: factorized interaction blocks
    'dnn': DNN,                           # DNN: MLP over concatenated embeddings
    'din': DIN,                           # DIN: target attention over behaviour histories
    'logreg': LogisticRegression,         # logistic regression: the first-order baseline
}

# Attributes that are not config fields: filled from the data schema, or internal.
NOT_CONFIG = ('vocab_sizes', 'num_dense', 'seq_share', 'seq_len', 'dtype', 'table_pad', 'parent', 'name')

_FIELD_LINE = re.compile(r'^\s+(\w+)\s*:\s*[^=#]+=\s*(?:.+?)\s*#\s*(.*)$')


class UnknownModelError(ValueError):
  """config.model.name is not a key of MODELS."""


def get_class(name: str):
  if name not in MODELS:
    raise UnknownModelError(f'config.model.name={name!r} is not a model; choose one of '
                            f'{list(MODELS)}.')
  return MODELS[name]


def dataclass_fields(cls, exclude=NOT_CONFIG) -> dict:
  """{field: (default, comment)} of a module class's fields with defaults, in declaration order.

  The comment is the one on the field's line in the class source (or a parent's): the one
  helper every family's model config section is made from, so no hand-kept list drifts.
  """
  comments = {}
  for klass in reversed(cls.__mro__):
    comments.update(_field_comments(klass))
  return {f.name: (f.default, comments.get(f.name, '')) for f in dataclasses.fields(cls)
          if f.name not in exclude and f.default is not dataclasses.MISSING}


@functools.lru_cache(maxsize=None)
def _field_comments(klass) -> dict:
  """{field: comment} from one class's own source (parsed once per class: inspect.getsource
  tokenizes the module, ~0.1 s, and every config build asks for every model's fields)."""
  try:
    source = inspect.getsource(klass)
  except (OSError, TypeError):
    return {}
  return {m.group(1): m.group(2).strip() for m in map(_FIELD_LINE.match, source.splitlines()) if m}


def fields(name: str) -> dict:
  """{field: (default, comment)} of a model's config section, in declaration order."""
  return dataclass_fields(get_class(name))


def choices(name: str) -> dict:
  """{field: allowed values} of a model's string fields with a fixed set of values."""
  return dict(getattr(get_class(name), 'CHOICES', {}))


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """The config section of model `name`: its fields and defaults, then `overrides`."""
  c = ml_collections.ConfigDict({'name': name})
  for k, (default, _) in fields(name).items():
    c[k] = default
  for k, v in overrides.items():
    if k not in c:
      raise ValueError(unknown_field_message(name, k))
    c[k] = v
  return c


def unknown_field_message(name: str, key: str) -> str:
  have = list(fields(name))
  import difflib  # pylint: disable=g-import-not-at-top
  close = difflib.get_close_matches(key, have, n=1)
  hint = f' Did you mean {close[0]!r}?' if close else ''
  others = [m for m in MODELS if m != name and key in fields(m)]
  also = f" ({key!r} is a field of {', '.join(others)}.)" if others else ''
  return (f'model {name!r} has no field {key!r}.{hint}{also} Its fields are: '
          f"{', '.join(have)}.")


def switch(model_cfg, name: str) -> ml_collections.ConfigDict:
  """`model_cfg` turned into model `name`'s section.

  A field carries over when both models have it with the same default, i.e. it means the
  same thing in both (embed_dim, width, depth for most pairs: a config file's sizes carry, so
  models compare at the same size), and the new model accepts the value (one of its choices,
  and its `check()` passes). A field whose default differs (OneTrans's connector 'prenorm' and
  tokenizer 'autosplit', RankMixer's num_heads = T) is part of what the new model is, so it
  takes the new model's default; so does every field the old model did not have.
  """
  new = model_config(name)
  allowed = choices(name)
  cls = get_class(name)
  old_defaults = fields(model_cfg.name) if model_cfg.get('name') in MODELS else {}

  def passes(cfg):
    kwargs = {k: v for k, v in cfg.items() if k != 'name'}
    try:
      cls(vocab_sizes=(8, 8), num_dense=1, **kwargs).check()
    except ValueError:
      return False
    return True

  for k, v in model_cfg.items():
    same_meaning = k in old_defaults and k in new and old_defaults[k][0] == new[k]
    if k != 'name' and same_meaning and (k not in allowed or v in allowed[k]):
      old, new[k] = new[k], tuple(v) if isinstance(v, list) else v
      if not passes(new):
        new[k] = old
  return new


def parse_value(name: str, key: str, text: str):
  """A command-line string for field `key` of model `name`, parsed to the default's type."""
  if key == 'name':
    return text
  default = fields(name)[key][0]
  if isinstance(default, bool):
    if text.lower() in ('true', '1', 'yes'):
      return True
    if text.lower() in ('false', '0', 'no'):
      return False
    raise ValueError(f'config.model.{key} must be true or false, got {text!r}.')
  if isinstance(default, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ValueError(f'config.model.{key}={text!r} is not a {type(default).__name__}.') from None
  if isinstance(default, tuple) and isinstance(value, (int, float)):
    value = (value,)
  return tuple(value) if isinstance(value, list) else value


def build(model_config_, schema, dtype=None):
  """Returns the Flax module named by `model_config_.name` for a data schema."""
  kwargs = dict(model_config_)
  name = kwargs.pop('name')
  cls = get_class(name)
  known = fields(name)
  for k in kwargs:
    if k not in known and k != 'dtype':
      raise ValueError(unknown_field_message(name, k))
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  if dtype is not None and 'dtype' in {f.name for f in dataclasses.fields(cls)}:
    kwargs['dtype'] = dtype  # models without a computation dtype (logreg) run in float32
  # Sequence fields (schema.seq_names) follow the categorical ones in vocab_sizes; every model
  # sees each as one more field (its pooled view, models/tokenizer.py).
  seq = dict(seq_share=schema.seq_share_index()) if getattr(schema, 'seq_names', ()) else {}
  if seq and 'seq_len' in {f.name for f in dataclasses.fields(cls)}:
    seq['seq_len'] = schema.seq_len  # models that count the FLOPs of their history tokens
  vocab_sizes = tuple(schema.vocab_sizes) + tuple(getattr(schema, 'seq_vocab_sizes', ()))
  return cls(vocab_sizes=vocab_sizes, num_dense=len(schema.dense_names), **seq, **kwargs)


def param_counts(params) -> dict:
  """Parameters split into embedding tables (any leaf named 'embedding') and dense ones."""
  import jax  # pylint: disable=g-import-not-at-top
  out = {'embedding': 0, 'dense': 0}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    is_embed = any(getattr(k, 'key', None) == 'embedding' for k in path)
    out['embedding' if is_embed else 'dense'] += int(leaf.size)
  out['total'] = out['embedding'] + out['dense']
  return out
