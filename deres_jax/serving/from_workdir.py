"""The model of a training WORKDIR as a `Scorer`, in process (uses the training code and config).

What is restored is what `train_and_evaluate` evaluated the test split with: the best-model
checkpoint (WORKDIR/best) when `eval.restore_best` kept one, else the newest regular
checkpoint. Only the parameters are read (an Orbax partial restore), onto one device.

The raw input format and the vocabularies come from the data the run trained on: the
prepared directory's schema.json and vocab.npz (Criteo, Avazu, CSV, Amazon; the sequence
fields' vocabularies too), or, for the synthetic data, its CSV format with identity
vocabularies (`features.synthetic_spec`).
"""
import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from deres_jax import models
from deres_jax.data import prepared
from deres_jax.data import synthetic
from deres_jax.data.rows import RowSpec
from deres_jax.data.schema import Schema
from deres_jax.data.vocab import load_vocab
from deres_jax.serving import features
from deres_jax.serving.scorer import Scorer
from deres_jax.train import checkpoint as ckpt_lib


class WorkdirError(ValueError):
  """A workdir that cannot be scored from (one sentence)."""


@dataclasses.dataclass
class Restored:
  """Everything `export` needs besides the scorer itself."""
  config: ml_collections.ConfigDict
  schema: Schema
  spec: features.InputSpec
  model: nn.Module
  params: dict
  step: int                   # training step of the parameters (models with schedules read it)
  summary: dict               # WORKDIR/summary.json ({} if the run has not finished)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise WorkdirError(f'{workdir!r} is not a training workdir (no config.json): train with '
                       'launch/train.py --workdir=... first')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def input_spec(data_config) -> tuple:
  """(Schema, features.InputSpec) of the data a config trains on."""
  name = data_config.name
  if name == 'synthetic':
    spec = synthetic.SyntheticSpec(**{f.name: data_config[f.name] for f in dataclasses.fields(synthetic.SyntheticSpec)
                                      if f.name in data_config})
    vocab = synthetic._Truth(spec).vocab  # pylint: disable=protected-access  # sizes only (0.5 s), no rows
    schema = Schema(dense_names=tuple(f'I{k + 1}' for k in range(synthetic.NUM_DENSE)),
                    cat_names=tuple(f'C{f + 1}' for f in range(synthetic.NUM_CAT)), vocab_sizes=vocab)
    return schema, features.synthetic_spec(synthetic.NUM_DENSE, vocab)
  if name in ('criteo', 'avazu', 'csv', 'amazon'):
    path = data_config.path
    if not prepared.is_complete(path):
      raise WorkdirError(f'the run trained on prepared data at config.data.path={path!r}, which is not '
                         'there any more: its vocabularies are needed to score new rows')
    meta = prepared.read_meta(path)
    vocab, _ = load_vocab(path)
    row_spec = RowSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta['spec'].items()})
    schema = Schema.from_json(meta['schema'])
    if schema.seq_names and data_config.get('sequences', 'keep') == 'drop':
      raise WorkdirError("the run was trained with config.data.sequences='drop' (a history-blind "
                         'baseline of a table): scoring raw rows of it is not supported; train '
                         'without that option to export and serve')
    seq_vocab = load_vocab(path, sequence=True) if schema.seq_names else {}  # a shared field: the scalar's keys
    return schema, features.InputSpec(row_spec, tuple(vocab[f][0] for f in schema.cat_names),
                                      tuple(seq_vocab[f][0] for f in schema.seq_names))
  raise WorkdirError(f'config.data.name={name!r}: scoring raw rows supports synthetic, criteo, avazu, '
                     'csv and amazon data')


def _abstract_params(model, schema, device):
  dummy = {'label': np.zeros(2, np.float32), 'cat': np.zeros((2, len(schema.cat_names)), np.int32)}
  if schema.dense_names:
    dummy['dense'] = np.zeros((2, len(schema.dense_names)), np.float32)
  if schema.seq_names:
    dummy['seq'] = np.full((2, len(schema.seq_names), schema.seq_len), -1, np.int32)
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), dummy)['params']))
  sharding = jax.sharding.SingleDeviceSharding(device)
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)


def restore(workdir: str, device=None) -> Restored:
  """The parameters, model, schema and input format of a training workdir."""
  config = read_config(workdir)
  if config.get('family') == 'multiscenario':
    raise WorkdirError('multi-scenario runs are not scored from a workdir here: export one with launch/export.py '
                       'and score rows with serving.load(model_dir).score_rows or launch/serve.py')
  schema, spec = input_spec(config.data)
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(config.model, schema, dtype=dtype)
  abstract = _abstract_params(model, schema, device or jax.devices()[0])
  step, params = restore_checkpoint(workdir, config, abstract)
  return Restored(config, schema, spec, model, params, step, read_summary(workdir))


def restore_checkpoint(workdir: str, config, abstract, abstract_model_state=None):
  """(step, params) the run evaluated its test split with: the best checkpoint if
  config.eval.restore_best and one was saved, else the newest regular one (without its
  optimizer state). `abstract`: the parameters' ShapeDtypeStructs (with their sharding).
  `abstract_model_state`: those of the model's other collections (STAR's 'batch_stats'), for a
  model that has them: then it returns (step, {'params': ..., **collections})."""
  best_dir, regular_dir = os.path.join(workdir, 'best'), os.path.join(workdir, 'checkpoints')
  item = {'params': abstract}
  if abstract_model_state is not None:
    item['model_state'] = abstract_model_state
  if config.eval.restore_best and ckpt_lib.has_checkpoints(best_dir):
    ckpt = ckpt_lib.Checkpointer(best_dir, None, async_save=False)
    step, tree, _ = ckpt.restore(item)
    ckpt.close()
  elif ckpt_lib.has_checkpoints(regular_dir):
    step, tree = restore_params_only(regular_dir, item)
  else:
    raise WorkdirError(f'{workdir!r} holds no checkpoint yet: let the training run save one')
  if abstract_model_state is not None:
    return int(step), {'params': tree['params'], **tree['model_state']}
  return int(step), tree['params']


def read_summary(workdir: str) -> dict:
  """The run's summary.json ({} if it has none yet)."""
  summary = {}
  if os.path.isfile(os.path.join(workdir, 'summary.json')):
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
  return summary


def restore_params_only(directory, item):
  """(step, {'params': ...}) of the newest regular checkpoint, without its optimizer state.
  `item`: the state's items to read as ShapeDtypeStructs ({'params': ...}, and 'model_state'
  for a model with one)."""
  manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=('state', 'meta'))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
      item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
  manager.close()
  return step, restored['state']


def apply_fn(model, step: int, variables: bool = False):
  """(params, batch) -> float32 logits: the model's evaluation forward pass at training step
  `step`; `variables`: it takes the Flax variables ({'params', 'batch_stats'}) instead."""
  def logits(params, batch):
    batch = dict(batch, step=jnp.int32(step))  # models with schedules (UniMixer) read the step
    return model.apply(params if variables else {'params': params}, batch)[0].astype(jnp.float32)
  return logits


def from_workdir(workdir: str, batch_size: int = 1024) -> Scorer:
  """A Scorer for the model a training workdir evaluated its test split with."""
  r = restore(workdir)
  fn = jax.jit(apply_fn(r.model, r.step))
  info = {'model': r.config.model.name, 'step': r.step, 'workdir': os.path.abspath(workdir)}
  return Scorer(r.spec, lambda batch: np.asarray(fn(r.params, batch)), batch_size, info)
