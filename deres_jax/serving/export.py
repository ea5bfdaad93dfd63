"""Exports a training workdir's model for serving with `jax.export` (`launch/export.py`).

The model directory holds everything scoring needs and nothing of the training code:

  model.jaxexport   the forward pass (params, {'cat', 'dense'}) -> logits [b], serialized
                    StableHLO with a symbolic batch dimension b (any batch size)
  params.npz        the parameters, one array per leaf ('tokenizer/embedding', ...)
  vocab.npz         per categorical field, the keys in id order ('<field>': int64 keys)
  manifest.json     the raw input format (RowSpec), the schema, the library and jax versions,
                    the training step and the metrics at export time

The parameters are arguments of the exported function rather than constants folded into it:
the StableHLO stays small whatever the embedding tables weigh, and the arrays load with numpy.
The directory is written beside `out` and renamed into place when complete.
"""
import dataclasses
import os

import jax
import numpy as np
from jax import export as jax_export

from deres_jax.serving import bundle
from deres_jax.serving import from_workdir
# The directory parts shared with the other exports live in bundle.py; re-exported for callers.
from deres_jax.serving.bundle import PLATFORMS, flatten_params, library_version  # noqa: F401

FORMAT = 'deres_jax.serving/1'
METRICS = ('test_auc', 'test_logloss', 'val_auc', 'val_logloss', 'oracle_auc', 'oracle_logloss', 'steps',
           'best_step', 'num_params', 'dataset')


def export(workdir: str, out: str, platforms=PLATFORMS, overwrite: bool = False) -> dict:
  """Exports the model of `workdir` (as `from_workdir.restore` finds it) to the directory `out`.

  Args:
    workdir: a training workdir with at least one checkpoint.
    out: the model directory to write.
    platforms: the platforms the StableHLO is lowered for ('cpu', 'cuda', 'tpu'); the
      exported function runs only on those.
    overwrite: replace an existing `out`.
  Returns:
    The manifest (also written to out/manifest.json).
  """
  out = bundle.check_out(out, overwrite)
  r = from_workdir.restore(workdir)
  b, = jax_export.symbolic_shape('b')
  batch = {'cat': jax.ShapeDtypeStruct((b, len(r.schema.cat_names)), np.int32)}
  if r.schema.dense_names:
    batch['dense'] = jax.ShapeDtypeStruct((b, len(r.schema.dense_names)), np.float32)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), r.params)
  exported = jax_export.export(jax.jit(from_workdir.apply_fn(r.model, r.step)),
                               platforms=tuple(platforms))(params, batch)
  manifest = {
      'format': FORMAT, **bundle.versions(),
      'workdir': os.path.abspath(workdir), 'model': r.config.model.name,
      'connector': r.config.model.get('connector'), 'step': r.step,
      'platforms': list(platforms),
      'schema': r.schema.to_json(), 'row_spec': dataclasses.asdict(r.spec.row_spec),
      'input_columns': list(r.spec.columns), 'features': list(r.spec.features),
      'metrics': {k: r.summary[k] for k in METRICS if k in r.summary},
  }

  def write_files(tmp):
    bundle.save_exported(os.path.join(tmp, 'model.jaxexport'), exported)
    bundle.save_params(tmp, r.params)
    bundle.save_vocab(tmp, r.schema.cat_names, r.spec.vocab)
  bundle.write(out, manifest, write_files)
  return manifest
