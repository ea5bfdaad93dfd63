"""Multi-scenario models. `MODELS` maps `config.model.name` to a Flax module class.

Every model maps a batch with a 'scenario' column to `(logits [B], aux)` like the CTR zoo
(`deres_jax/models/__init__.py`), so the CTR train step trains them unchanged;
`aux['losses']` carries MI-DPG's mutual-information term. All share the CTR tokenizer and
the MLP backbone widths `hidden`. Parameters whose path has a key starting with 'scenario'
are the scenario-specific ones (`param_counts`): per-scenario tables, towers, gates, and the
generators whose outputs differ by scenario.
"""

import jax
import ml_collections

from deres_jax import models as ctr_models
from deres_jax.multiscenario.models.adasparse import AdaSparse
from deres_jax.multiscenario.models.apg import APG
from deres_jax.multiscenario.models.inputs import BACKBONES, SCENARIO
from deres_jax.multiscenario.models.m2m import M2M
from deres_jax.multiscenario.models.midpg import MIDPG
from deres_jax.multiscenario.models.mmoe import MMoE
from deres_jax.multiscenario.models.pepnet import PEPNet
from deres_jax.multiscenario.models.ple import PLE
from deres_jax.multiscenario.models.sarnet import SARNet
from deres_jax.multiscenario.models.shared_bottom import SharedBottom
from deres_jax.multiscenario.models.star import STAR

# config.model.name -> model class (each in its own module, named after the model).
MODELS = {
    'midpg': MIDPG,                  # MI-DPG: generated low-rank weightings + MI regulariser
    'shared_bottom': SharedBottom,   # Shared-Bottom: shared MLP, one tower per scenario
    'mmoe': MMoE,                    # MMoE: shared experts, per-scenario gates and towers
    'ple': PLE,                      # PLE: shared + scenario experts (one CGC level)
    'star': STAR,                    # STAR: W ⊙ W_s star topology, partitioned norm, aux net
    'sarnet': SARNet,                # SAR-Net: scenario attention, shared + specific experts, debias net
    'pepnet': PEPNet,                # PEPNet: EPNet + PPNet gates in (0, γ)
    'apg': APG,                      # APG: generated k x k cores, decomposed feed-forward
    'm2m': M2M,                      # M2M: meta attention + meta tower
    'adasparse': AdaSparse,          # AdaSparse: scenario-adaptive neuron pruning
}

# Set by the code, not the config (sizes and sequence sharing from the schema; MI-DPG's scenario
# prior from the rows).
NOT_CONFIG = ('vocab_sizes', 'num_dense', 'num_scenarios', 'seq_share', 'dtype', 'parent', 'name',
              'scenario_prior')


def get_class(name: str):
  if name not in MODELS:
    raise ValueError(f'config.model.name={name!r} is not a multi-scenario model; choose one of '
                     f'{list(MODELS)}.')
  return MODELS[name]


def fields(name: str) -> dict:
  """{field: (default, comment)} of a model's config section, in declaration order."""
  return ctr_models.dataclass_fields(get_class(name), NOT_CONFIG)


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """The config section of model `name`: its fields and defaults, then `overrides`."""
  c = ml_collections.ConfigDict({'name': name, **{k: v for k, (v, _) in fields(name).items()}})
  for k, v in overrides.items():
    if k not in c:
      raise ValueError(f'model {name!r} has no field {k!r}; its fields are {list(fields(name))}.')
    c[k] = v
  return c


def check(model_cfg) -> None:
  """Raises ValueError (one sentence) for an unknown field, a bad choice or a failed check()."""
  name = model_cfg.get('name', '')
  cls, known = get_class(name), fields(name)
  for k, v in model_cfg.items():
    if k != 'name' and k not in known:
      raise ValueError(f'model {name!r} has no field {k!r}; its fields are {list(known)}.')
  for k, allowed in dict(getattr(cls, 'CHOICES', {}), backbone=BACKBONES).items():
    if k in model_cfg and model_cfg[k] not in allowed:
      raise ValueError(f'config.model.{k}={model_cfg[k]!r} is not one of {list(allowed)} '
                       f'(model {name!r}).')
  build(model_cfg, vocab_sizes=(8,), num_dense=1, num_scenarios=2).check()


def build(model_cfg, schema=None, dtype=None, vocab_sizes=None, num_dense=None,
          num_scenarios=None):
  """The Flax module named by `model_cfg.name` for a schema (or explicit sizes).

  Sequence fields of the schema (`seq_names`) follow the categorical ones in `vocab_sizes` and
  set `seq_share`, as the CTR zoo's `models.build` does: every model sees each history as one
  more field, its pooled view (multiscenario/models/inputs.py).
  """
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in model_cfg.items() if k != 'name'}
  if dtype is not None:
    kwargs['dtype'] = dtype
  if schema is not None:
    vocab_sizes = tuple(schema.vocab_sizes) + tuple(getattr(schema, 'seq_vocab_sizes', ()))
    num_dense, num_scenarios = len(schema.dense_names), schema.num_scenarios
    if getattr(schema, 'seq_names', ()):
      kwargs['seq_share'] = schema.seq_share_index()
  return get_class(model_cfg.name)(vocab_sizes=tuple(vocab_sizes), num_dense=num_dense,
                                   num_scenarios=num_scenarios, **kwargs)


def param_counts(params) -> dict:
  """Parameters split into embedding tables, scenario-specific and shared dense ones."""
  out = {'embedding': 0, 'scenario': 0, 'shared': 0}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = [str(getattr(k, 'key', '')) for k in path]
    kind = ('embedding' if 'embedding' in keys else
            'scenario' if any(k.startswith(SCENARIO) for k in keys) else 'shared')
    out[kind] += int(leaf.size)
  out['total'] = sum(out.values())
  return out
