"""Exports a multi-scenario run (MI-DPG and its baselines) for serving, like a CTR model.

  model.jaxexport  (params, {'cat': int32[b, F], 'dense': float32[b, D], 'scenario': int32[b]
                   (, 'seq': int32[b, F_seq, L] for a run with sequence fields, left-padded with -1)})
                   -> logits float32[b], jax.export StableHLO with a symbolic batch b
  params.npz       the parameters, one array per leaf
  vocab.npz        a dataset read from raw values (CSV/Parquet): per categorical field the keys
                   of its raw values in id order ('<field>': int64 keys), as a CTR export's, and
                   per sequence field with a vocabulary of its own ('<sequence field>')
  manifest.json    kind 'multiscenario', the schema (field names, vocabulary sizes), the scenario
                   names in id order, `vocabulary` ('raw': rows hold raw values, looked up in
                   vocab.npz; 'ids': the synthetic data, whose ids are its raw values), the raw
                   files' layout (`raw_format`), the model, step, versions, test metrics;
                   'sequences' (export.py `sequence_manifest`, as a CTR export's): per sequence
                   field its name, cap, separator, padding and the vocab.npz entry it reads

Rows are scored with a `scenario` column (`scenario_scorer.py`); a scenario not seen in training
gets the id S, the shared path of every model. The directory is written beside `out` and renamed
into place when complete.
"""
import dataclasses
import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax import export as jax_export

from deres_jax import multiscenario
from deres_jax.data import iterator as iterator_lib
from deres_jax.multiscenario import data as ms_data
from deres_jax.multiscenario import family as ms_family
from deres_jax.serving import bundle
from deres_jax.serving import export as export_lib
from deres_jax.serving import from_workdir
from deres_jax.serving.scenario_scorer import ScenarioScorer

FORMAT = 'deres_jax.serving.multiscenario/1'


@dataclasses.dataclass
class ScenarioRestored:
  config: ml_collections.ConfigDict
  info: dict            # schema and scenario names (ScenarioScorer's `info`)
  model: nn.Module
  params: dict
  step: int
  summary: dict
  variables: bool = False  # `params` are the Flax variables {'params', 'batch_stats'} (STAR 'batch')
  vocab: tuple | None = None  # raw values: per categorical field the int64 keys in id order
  seq_vocab: tuple = ()       # per sequence field the int64 keys in id order (a shared field: its field's)


def _vocab(workdir: str, ds) -> tuple:
  """(per categorical field, per sequence field) the keys of the raw-value vocabularies ((None, ()):
  ids are the raw values), checked against the copy training saved in the workdir (rebuilt from
  changed data files, ids would silently differ)."""
  if not ds.vocab:
    if ds.schema.seq_names:
      raise from_workdir.WorkdirError('sequence fields are served on raw values only, and this dataset '
                                      'has no raw-value vocabularies')
    return None, ()
  keys = ms_data.all_vocab_keys(ds)
  path = os.path.join(workdir, ms_data.VOCAB_FILE)
  if os.path.isfile(path):
    with np.load(path) as z:
      changed = [f for f in keys if f not in z.files or not np.array_equal(z[f], keys[f])]
    if changed:
      raise from_workdir.WorkdirError(
          f'the vocabularies of {changed[:5]} rebuilt from config.data differ from those the run trained with '
          f'({path}): the data files changed since training; restore them to export this run')
  shared = ds.schema.seq_shared or ('',) * len(ds.schema.seq_names)
  return (tuple(keys[f] for f in ds.schema.cat_names),
          tuple(keys[s or f] for f, s in zip(ds.schema.seq_names, shared)))


def restore(workdir: str) -> ScenarioRestored:
  """The model and parameters a multi-scenario run evaluated its test split with."""
  config = from_workdir.read_config(workdir)
  if config.get('family') != 'multiscenario':
    raise from_workdir.WorkdirError(f'{workdir!r} is not a multi-scenario run')
  ds = multiscenario.load(config.data)
  vocab, seq_vocab = _vocab(workdir, ds)
  # The model as the run built it (AdaSparse's annealing length is set from the run's steps).
  model = ms_family.build_model(config, ds)
  dummy = {k: v[:2] for k, v in ds.splits['train'].items() if k in iterator_lib.TRAIN_COLUMNS}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), dummy)))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
  model_state = {k: v for k, v in abstract.items() if k != 'params'} or None
  # `params` is what the exported function takes: the parameters, or for a model with running
  # statistics (STAR, partition_norm='batch') the variables {'params', 'batch_stats'}.
  step, params = from_workdir.restore_checkpoint(workdir, config, abstract['params'], model_state)
  if hasattr(model, 'for_inference'):  # APG: the over-parameterised U_l U_r, V_l V_r merged
    model, params = model.for_inference(params)
  summary = from_workdir.read_summary(workdir)
  info = {'dense_names': list(ds.schema.dense_names), 'cat_names': list(ds.schema.cat_names),
          'vocab_sizes': [int(v) for v in ds.schema.vocab_sizes], 'scenario_names': list(ds.scenario_names),
          'target': ds.target, 'dataset': ds.source, 'vocabulary': 'raw' if ds.vocab else 'ids'}
  if ds.vocab:
    info['raw_format'] = dict(ds.raw_format)
  if ds.schema.seq_names:   # as a CTR export describes them (export.py sequence_manifest)
    info.update(seq_len=ds.schema.seq_len, sequences=export_lib.sequence_manifest(
        ds.schema, ds.raw_format.get('seq_sep', '|')))
  return ScenarioRestored(config, info, model, params, step, summary, model_state is not None, vocab, seq_vocab)


def in_process(workdir: str, batch_size: int = 1024) -> ScenarioScorer:
  """The run's model as a ScenarioScorer, jit-compiled in process (no export)."""
  r = restore(workdir)
  fn = jax.jit(from_workdir.apply_fn(r.model, r.step, r.variables))
  return ScenarioScorer(lambda batch: np.asarray(fn(r.params, batch)), dict(r.info, step=r.step), batch_size,
                        r.vocab, r.seq_vocab)


def export(workdir: str, out: str, platforms=bundle.PLATFORMS, overwrite: bool = False) -> dict:
  """Exports the model of the multi-scenario run `workdir` to the directory `out`.

  Args:
    workdir: a multi-scenario training workdir with a checkpoint.
    out: the model directory to write.
    platforms: the platforms the StableHLO is lowered for.
    overwrite: replace an existing `out`.
  Returns:
    The manifest (also written to out/manifest.json).
  """
  out = bundle.check_out(out, overwrite)
  r = restore(workdir)
  b, = jax_export.symbolic_shape('b')
  batch = {'cat': jax.ShapeDtypeStruct((b, len(r.info['cat_names'])), np.int32),
           'dense': jax.ShapeDtypeStruct((b, len(r.info['dense_names'])), np.float32),
           'scenario': jax.ShapeDtypeStruct((b,), np.int32)}
  if r.info.get('sequences'):
    batch['seq'] = jax.ShapeDtypeStruct((b, len(r.info['sequences']), r.info['seq_len']), np.int32)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), r.params)
  exported = jax_export.export(jax.jit(from_workdir.apply_fn(r.model, r.step, r.variables)),
                               platforms=tuple(platforms))(params, batch)
  test = r.summary.get('test', {})
  manifest = {
      'format': FORMAT, 'kind': 'multiscenario', **r.info, **bundle.versions(),
      'workdir': os.path.abspath(workdir), 'model': r.config.model.name, 'step': r.step,
      'platforms': list(platforms),
      'metrics': {k: test[k] for k in ('auc', 'logloss', 'wauc') if isinstance(test.get(k), float)},
  }

  def write_files(tmp):
    bundle.save_exported(os.path.join(tmp, 'model.jaxexport'), exported)
    bundle.save_params(tmp, r.params)
    if r.vocab is not None:   # and the sequence fields with a vocabulary of their own
      own = [(s['vocab'], keys) for s, keys in zip(r.info.get('sequences', ()), r.seq_vocab) if not s['shares']]
      bundle.save_vocab(tmp, r.info['cat_names'] + [n for n, _ in own], r.vocab + tuple(k for _, k in own))
  bundle.write(out, manifest, write_files)
  return manifest
