"""Exports a multi-scenario run (MI-DPG and its baselines) for serving, like a CTR model.

  model.jaxexport  (params, {'cat': int32[b, F], 'dense': float32[b, D], 'scenario': int32[b]})
                   -> logits float32[b], jax.export StableHLO with a symbolic batch b
  params.npz       the parameters, one array per leaf
  manifest.json    kind 'multiscenario', the encoded schema (field names, vocabulary sizes),
                   the scenario names in id order, the model, step, versions, test metrics

Rows are scored in the encoded schema with a `scenario` column (`scenario_scorer.py`); a
scenario not seen in training gets the id S, the shared path of every model. The directory is
written beside `out` and renamed into place when complete.
"""
import dataclasses
import datetime
import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import export as jax_export

from deres_jax import multiscenario
from deres_jax.data import iterator as iterator_lib
from deres_jax.multiscenario import models
from deres_jax.serving import export as ctr_export
from deres_jax.serving import from_workdir
from deres_jax.serving.scenario_scorer import ScenarioScorer
from deres_jax.train import checkpoint as ckpt_lib

FORMAT = 'deres_jax.serving.multiscenario/1'


@dataclasses.dataclass
class ScenarioRestored:
  config: ml_collections.ConfigDict
  info: dict            # schema and scenario names (ScenarioScorer's `info`)
  model: nn.Module
  params: dict
  step: int
  summary: dict


def restore(workdir: str) -> ScenarioRestored:
  """The model and parameters a multi-scenario run evaluated its test split with."""
  config = from_workdir.read_config(workdir)
  if config.get('family') != 'multiscenario':
    raise from_workdir.WorkdirError(f'{workdir!r} is not a multi-scenario run')
  ds = multiscenario.load(config.data)
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(config.model, ds.schema, dtype=dtype)
  dummy = {k: v[:2] for k, v in ds.splits['train'].items() if k in iterator_lib.TRAIN_COLUMNS}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), dummy)['params'])))
  best_dir, regular_dir = os.path.join(workdir, 'best'), os.path.join(workdir, 'checkpoints')
  if config.eval.restore_best and ckpt_lib.has_checkpoints(best_dir):
    ckpt = ckpt_lib.Checkpointer(best_dir, None, async_save=False)
    step, tree, _ = ckpt.restore({'params': abstract})
    ckpt.close()
  elif ckpt_lib.has_checkpoints(regular_dir):
    step, tree = from_workdir.restore_params_only(regular_dir, abstract)
  else:
    raise from_workdir.WorkdirError(f'{workdir!r} holds no checkpoint yet: let the training run save one')
  summary = {}
  if os.path.isfile(os.path.join(workdir, 'summary.json')):
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
  info = {'dense_names': list(ds.schema.dense_names), 'cat_names': list(ds.schema.cat_names),
          'vocab_sizes': [int(v) for v in ds.schema.vocab_sizes], 'scenario_names': list(ds.scenario_names),
          'target': ds.target, 'dataset': ds.source}
  return ScenarioRestored(config, info, model, tree['params'], int(step), summary)


def in_process(workdir: str, batch_size: int = 1024) -> ScenarioScorer:
  """The run's model as a ScenarioScorer, jit-compiled in process (no export)."""
  r = restore(workdir)
  fn = jax.jit(from_workdir.apply_fn(r.model, r.step))
  return ScenarioScorer(lambda batch: np.asarray(fn(r.params, batch)), dict(r.info, step=r.step), batch_size)


def export(workdir: str, out: str, platforms=ctr_export.PLATFORMS, overwrite: bool = False) -> dict:
  """Exports the model of the multi-scenario run `workdir` to the directory `out`.

  Args:
    workdir: a multi-scenario training workdir with a checkpoint.
    out: the model directory to write.
    platforms: the platforms the StableHLO is lowered for.
    overwrite: replace an existing `out`.
  Returns:
    The manifest (also written to out/manifest.json).
  """
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f'{out} already exists; pass --overwrite to replace it')
  r = restore(workdir)
  b, = jax_export.symbolic_shape('b')
  batch = {'cat': jax.ShapeDtypeStruct((b, len(r.info['cat_names'])), np.int32),
           'dense': jax.ShapeDtypeStruct((b, len(r.info['dense_names'])), np.float32),
           'scenario': jax.ShapeDtypeStruct((b,), np.int32)}
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), r.params)
  exported = jax_export.export(jax.jit(from_workdir.apply_fn(r.model, r.step)),
                               platforms=tuple(platforms))(params, batch)
  test = r.summary.get('test', {})
  manifest = {
      'format': FORMAT, 'kind': 'multiscenario', **r.info,
      'library_version': ctr_export.library_version(), 'jax_version': jax.__version__,
      'exported_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'workdir': os.path.abspath(workdir), 'model': r.config.model.name, 'step': r.step,
      'platforms': list(platforms),
      'metrics': {k: test[k] for k in ('auc', 'logloss', 'wauc') if isinstance(test.get(k), float)},
  }
  tmp = f'{out}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    with open(os.path.join(tmp, 'model.jaxexport'), 'wb') as f:
      f.write(exported.serialize())
    np.savez(os.path.join(tmp, 'params.npz'), **ctr_export.flatten_params(r.params))
    with open(os.path.join(tmp, 'manifest.json'), 'w') as f:
      json.dump(manifest, f, indent=2)
    if os.path.exists(out):
      shutil.rmtree(out)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return manifest
