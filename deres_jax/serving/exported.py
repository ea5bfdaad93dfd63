"""`load(model_dir)`: an exported model as a `Scorer`, without the training code or the config.

Reads what `export` wrote (manifest.json, vocab.npz, params.npz, model.jaxexport) and calls
the deserialized StableHLO; nothing of deres_jax.models, deres_jax.train or deres_jax.config
is imported.
"""
import json
import os

import jax
import numpy as np
from jax import export as jax_export

from deres_jax.serving import features
from deres_jax.serving.scorer import Scorer

FILES = ('manifest.json', 'model.jaxexport', 'params.npz', 'vocab.npz')


class ModelDirError(ValueError):
  """Not a complete exported model directory (one sentence)."""


def unflatten_params(flat: dict) -> dict:
  """The nested parameter dict of {'a/b/c': array}."""
  params = {}
  for name, value in flat.items():
    *path, leaf = name.split('/')
    node = params
    for k in path:
      node = node.setdefault(k, {})
    node[leaf] = value
  return params


def load(model_dir: str, batch_size: int = 1024) -> Scorer:
  """The exported model in `model_dir` as a Scorer (`launch/export.py` writes it).

  Args:
    model_dir: the directory written by `deres_jax.serving.export.export`.
    batch_size: the most rows per call of the model (larger inputs are split).
  Returns:
    A Scorer; `scorer.info` is the manifest (schema, versions, step, metrics at export).
  """
  missing = [f for f in FILES if not os.path.isfile(os.path.join(model_dir, f))]
  if missing:
    raise ModelDirError(f'{model_dir!r} is not an exported model directory (missing {", ".join(missing)}); '
                        'write one with launch/export.py')
  with open(os.path.join(model_dir, 'manifest.json')) as f:
    manifest = json.load(f)
  with open(os.path.join(model_dir, 'model.jaxexport'), 'rb') as f:
    exported = jax_export.deserialize(bytearray(f.read()))
  platform = jax.default_backend()
  if platform not in exported.platforms and not (platform == 'gpu' and 'cuda' in exported.platforms):
    raise ModelDirError(f'the model was exported for {list(exported.platforms)}, not {platform!r}: '
                        f'export again with --platforms={platform}')
  with np.load(os.path.join(model_dir, 'params.npz')) as z:
    params = jax.device_put(unflatten_params({k: z[k] for k in z.files}))
  with np.load(os.path.join(model_dir, 'vocab.npz')) as z:
    vocab = tuple(z[f] for f in manifest['schema']['cat_names'])
  spec = features.InputSpec.from_json(manifest['row_spec'], vocab)
  call = jax.jit(exported.call)
  return Scorer(spec, lambda batch: np.asarray(call(params, batch)), batch_size, manifest)
