"""Exports a training workdir's model for serving with `jax.export` (`launch/export.py`).

The model directory holds everything scoring needs and nothing of the training code:

  model.jaxexport   the forward pass (params, {'cat', 'dense', 'seq'}) -> logits [b], serialized
                    StableHLO with a symbolic batch dimension b (any batch size); 'seq' (int32
                    [b, F_seq, L], left-padded with -1 as the prepared splits) only for a run
                    with sequence fields
  params.npz        the parameters, one array per leaf ('tokenizer/embedding', ...)
  vocab.npz         per categorical field, the keys in id order ('<field>': int64 keys), and per
                    sequence field with a vocabulary of its own ('<sequence field>')
  manifest.json     the raw input format (RowSpec), the schema, the library and jax versions,
                    the training step and the metrics at export time; 'sequences': per sequence
                    field its name, cap, separator, padding and the vocab.npz entry it reads

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
  if r.schema.seq_names:
    batch['seq'] = jax.ShapeDtypeStruct((b, len(r.schema.seq_names), r.schema.seq_len), np.int32)
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
      'sequences': sequence_manifest(r.schema, r.spec.row_spec.seq_sep),
  }
  vocab = dict(zip(r.schema.cat_names, r.spec.vocab))
  vocab.update({s['vocab']: keys for s, keys in zip(manifest['sequences'], r.spec.seq_vocab) if not s['shares']})

  def write_files(tmp):
    bundle.save_exported(os.path.join(tmp, 'model.jaxexport'), exported)
    bundle.save_params(tmp, r.params)
    bundle.save_vocab(tmp, list(vocab), list(vocab.values()))
  bundle.write(out, manifest, write_files)
  return manifest


def sequence_manifest(schema, seq_sep: str) -> list:
  """Per sequence field: name, cap (the most recent `max_len` ids), separator, padding, vocabulary.

  'shares' names the categorical field whose ids it shares ('' = a vocabulary of its own);
  'vocab' is its entry in vocab.npz (the shared field's, or its own name). The multi-scenario
  export (multiscenario_export.py) describes its sequence fields with it too.
  """
  return [{'name': f, 'max_len': schema.seq_len, 'sep': seq_sep, 'padding': 'left', 'pad_id': -1,
           'shares': shared, 'vocab': shared or f}
          for f, shared in zip(schema.seq_names, schema.seq_shared or ('',) * len(schema.seq_names))]
