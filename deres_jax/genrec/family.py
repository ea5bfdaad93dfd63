"""The generative-retrieval family (`config.family = 'genrec'`): SASRec, TIGER, CAPSID, COBRA.

What is specific to it, for the one training loop (train/trainer.py): `build` runs the
stages before training (item features -> semantic IDs -> optional SemanticBPE, each kept in
WORKDIR/tokenizer/ and never refitted once finished; genrec/tasks.py) and returns the
retriever as a loop task. Training rows are the sliding (TIGER) or causal (SASRec) windows of
the training parts; `prepare` turns a batch of rows into tokens on the host. Validation and
test rank the full catalogue (SASRec) or decode by trie-constrained beam search (TIGER):
Recall/NDCG@5/10 overall, on tail and head items; `eval.monitor` (default recall@10) picks
the best parameters, with which the test users are evaluated once.
"""
import json
import time

import jax
import numpy as np

from deres_jax.genrec import config as config_lib
from deres_jax.genrec import data as data_lib
from deres_jax.genrec import metrics
from deres_jax.genrec import tasks
from deres_jax.genrec import tokenizer_stats
from deres_jax.train import family as family_lib


def load(config) -> data_lib.SequenceData:
  data = data_lib.load(config.data.path, config.data.dataset, config.data.max_len)
  if jax.process_index() == 0:
    print(f'data: {len(data.users)} users, {data.num_items} items, '
          f'{sum(len(s) for s in data.train_seqs)} training interactions', flush=True)
  return data


def make_task(config, data, workdir):
  """The retriever of `config.system` (and its tokenizer stages); returns (task, notes)."""
  notes = {}
  if config.system == 'sasrec':
    return tasks.SASRecTask(config, data), notes
  table, notes['tokenizer'] = tasks.tokenizer_stage(config, data, workdir)
  task = (tasks.TigerTask if config.system == 'tiger' else tasks.CobraTask)(config, data, table, workdir)
  notes['mean_tokens_per_item'] = task.mean_tokens_per_item
  if task.bpe_stats:
    notes['bpe'] = task.bpe_stats
  return task, notes


def host_local(params):
  """The parameters as one process-local copy on its first device.

  Evaluation (beam search, full-catalogue scores) runs the same on every process over the whole
  user list, so it needs every parameter whole on one device: a replicated array's first local
  copy, or a gathered sharded one. On one host this also keeps the decoding off the other mesh
  devices (a replicated jit would repeat it on each).
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def local(x):
    if not isinstance(x, jax.Array):
      return x
    if x.is_fully_replicated:
      return x.addressable_data(0)
    return jax.device_put(np.asarray(multihost_utils.process_allgather(x, tiled=True)), jax.local_devices()[0])
  return jax.tree.map(local, params)


def build(config, data, workdir, mesh) -> family_lib.Task:
  """The genrec task of one run: tokenizer stages first, then the retriever."""
  del mesh  # parameters replicated (no logical axes), batches over 'data': the loop's defaults
  task, notes = make_task(config, data, workdir)
  tail = metrics.tail_items(data.train_count, config.eval.tail_fraction)
  slices = tokenizer_stats.slices(data.train_count)   # cold-start and popularity thirds (CAPSID's paper)
  val_rows = metrics.user_draw(len(data.users), config.eval.num_val_users, config.seed)
  # A fixed draw (not config.seed): every system and seed is tested on the same users.
  test_rows = metrics.user_draw(len(data.users), config.eval.num_test_users, 0)

  def evaluate(params, split, step):
    del step
    rows = val_rows if split == 'val' else test_rows
    return metrics.evaluate(task.ranks(host_local(params), split, rows), getattr(data, f'{split}_target')[rows],
                            tail, slices=slices)

  def summary(params, step):
    del step
    t0 = time.time()
    task.latency_ms, task.decoded, task.incomplete = [], 0, 0   # test decoding only
    test = evaluate(params, 'test', None)
    out = {'system': config.system, 'dataset': config.data.dataset, 'seed': config.seed, **notes,
           'test': test, 'test_seconds': time.time() - t0,
           'num_params': int(sum(np.size(x) for x in jax.tree.leaves(params)))}
    if len(test_rows) < len(data.users):
      out['test_users'] = int(len(test_rows))
    lat = np.asarray(task.latency_ms[1:] or task.latency_ms)  # the first call may compile
    out['decode_ms_per_user'] = {'median': float(np.median(lat)), 'p90': float(np.percentile(lat, 90)),
                                 'batch_size': config.eval.batch_size, 'calls': len(task.latency_ms),
                                 'beam_size': config.eval.beam_size if config.system != 'sasrec' else None}
    if isinstance(task, tasks.TigerTask):
      # Every decoded ID is a trie leaf, i.e. a real item (beam.py); incomplete beams are counted.
      out['decoded_ids'], out['incomplete_beams'] = task.decoded, task.incomplete
    return out

  return family_lib.Task(init=task.init, loss=task.loss, train=task.examples, prepare=task.prepare,
                         evaluate=evaluate, summary=summary, higher_is_better=True,
                         buckets=getattr(task, 'buckets', None))


def print_summary(summary: dict):
  print(f"test ({summary['system']} on {summary['dataset']}, best step {summary['best_step']}): "
        + json.dumps({k: round(v, 5) for k, v in summary['test'].items() if isinstance(v, float)}), flush=True)


def apply_model_flags(config, pairs):
  """--config.model.<field>=<text> pairs: the system's model fields (SASRec or TIGER)."""
  import ast  # pylint: disable=g-import-not-at-top
  known = config_lib.model_fields(config.system)
  with config.unlocked():
    for key, text in pairs:
      if key not in known:
        raise config_lib.ctr_config.ConfigError(
            f'config.model.{key} is not a field of the {config.system!r} model; its fields are {list(known)}.')
      default = known[key][0]
      try:
        value = text if isinstance(default, str) else ast.literal_eval(text)
      except (ValueError, SyntaxError):
        raise config_lib.ctr_config.ConfigError(
            f'--config.model.{key}={text!r} does not parse as a {type(default).__name__}.') from None
      config.model[key] = value
  return config


FAMILY = family_lib.Family(
    validate=config_lib.validate,
    load=load,
    build=build,
    report=print_summary,
    apply_overrides=apply_model_flags)
