"""Models. `MODELS` maps `config.model.name` to a Flax module; `build` instantiates one."""
from deres_jax.models.logreg import LogisticRegression
from deres_jax.models.transformer import CTRTransformer

MODELS = {
    'transformer': CTRTransformer,   # OneTrans-style CTR Transformer with prenorm/attnres/deres
    'logreg': LogisticRegression,    # first-order baseline
}


def build(model_config, schema):
  """Returns the Flax module named by `model_config.name` for a data schema."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  if name not in MODELS:
    raise ValueError(f'config.model.name={name!r} is not a model; choose one of {sorted(MODELS)}')
  if name == 'logreg':
    kwargs = {k: kwargs[k] for k in ('dense_transform',) if k in kwargs}
  for k in ('head_hidden',):
    if k in kwargs:
      kwargs[k] = tuple(kwargs[k])
  return MODELS[name](vocab_sizes=tuple(schema.vocab_sizes), num_dense=len(schema.dense_names),
                      **kwargs)
