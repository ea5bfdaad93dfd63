"""Models. `MODELS` maps `config.model.name` to a Flax module; `build` instantiates one."""
import dataclasses

from deres_jax.models.dcnv2 import DCNv2
from deres_jax.models.logreg import LogisticRegression
from deres_jax.models.transformer import CTRTransformer

MODELS = {
    'transformer': CTRTransformer,   # OneTrans-style CTR Transformer with prenorm/attnres/deres
    'logreg': LogisticRegression,    # first-order baseline
    'dcnv2': DCNv2,                  # cross network baseline (FuxiCTR comparison)
}


def build(model_config, schema):
  """Returns the Flax module named by `model_config.name` for a data schema."""
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  if name not in MODELS:
    raise ValueError(f'config.model.name={name!r} is not a model; choose one of {sorted(MODELS)}')
  # config.model holds the fields of every model: pass each model the ones it declares.
  accepted = {f.name for f in dataclasses.fields(MODELS[name])} - {'parent', 'name'}
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items() if k in accepted}
  return MODELS[name](vocab_sizes=tuple(schema.vocab_sizes), num_dense=len(schema.dense_names),
                      **kwargs)
