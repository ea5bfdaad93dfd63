"""Models. `MODELS` maps `config.model.name` to a Flax module; `build` instantiates one."""
from deres_jax.models.dcnv2 import DCNv2
from deres_jax.models.logreg import LogisticRegression
from deres_jax.models.transformer import CTRTransformer

MODELS = {
    'transformer': CTRTransformer,   # OneTrans-style CTR Transformer with prenorm/attnres/deres
    'logreg': LogisticRegression,    # first-order baseline
    'dcnv2': DCNv2,                  # cross network baseline (FuxiCTR comparison)
}

# Config fields (of config.model) each model takes besides the schema.
FIELDS = {
    'logreg': ('dense_transform',),
    'dcnv2': ('embed_dim', 'num_cross', 'dnn_hidden', 'structure', 'dense_transform', 'dtype'),
}


def build(model_config, schema):
  """Returns the Flax module named by `model_config.name` for a data schema."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  if name not in MODELS:
    raise ValueError(f'config.model.name={name!r} is not a model; choose one of {sorted(MODELS)}')
  if name in FIELDS:
    kwargs = {k: kwargs[k] for k in FIELDS[name] if k in kwargs}
  else:
    kwargs = {k: v for k, v in kwargs.items() if k not in ('num_cross', 'dnn_hidden', 'structure')}
  for k in ('head_hidden', 'dnn_hidden'):
    if k in kwargs:
      kwargs[k] = tuple(kwargs[k])
  return MODELS[name](vocab_sizes=tuple(schema.vocab_sizes), num_dense=len(schema.dense_names),
                      **kwargs)
