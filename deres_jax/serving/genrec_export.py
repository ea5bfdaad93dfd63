"""Exports a generative-retrieval run (TIGER, COBRA, SASRec) for serving with `jax.export`.

The model directory (`launch/export.py --workdir=<genrec run>`) holds everything
`serving.load` needs to recommend and nothing of the training code:

  retriever_k<K>.jaxexport  per beam size K: (params, arrays, inputs [b, S]) -> (items [b, K],
                            scores [b, K]), serialized StableHLO with a symbolic batch b. For
                            TIGER it is the whole recommendation: the encoder, then the
                            KV-cached trie-constrained beam search (genrec/beam.py
                            `beam_search_cached`) inside one function, so every returned id is
                            a catalogue item; for COBRA the same beam search with K beams, then
                            the dense vector of each beam and BeamFusion against the item
                            vectors (genrec/cobra.py `fuse_beams`, the ranking of
                            tasks.CobraTask: the beams' own items or every catalogue item, per
                            `config.cobra.candidates`), in the same function; for SASRec the
                            full-catalogue scores of the last position and their top K
                            (`lax.top_k`, item 0 excluded)
  params.npz                the retriever's parameters, one array per leaf
  trie.npz                  TIGER, COBRA: the trie of valid token strings as CSR arrays
                            (child_start, child_token, child_node, node_item), arguments of the
                            function (`arrays`)
  item_vectors.npz          COBRA: `item_vectors` [N+1, D], the dense vector of every item
                            (`Cobra.items`: the learned table, or the content tower applied to
                            the tokenizer's content features, computed once at export), also in
                            `arrays`
  items.npz                 TIGER, COBRA: the SID <-> item table (`codes` [N+1, m+1], row 0
                            padding, `level_sizes`) and the token table the encoder reads
                            (`item_tokens` [N+1, m], after SemanticBPE merges if any)
  manifest.json             kind 'genrec', system, catalogue size, history cap, beam sizes, the
                            user-token layout, COBRA's fusion settings (`cobra`), the
                            tokenizer's statistics, versions, the training step and the test
                            metrics at export

The directory is written beside `out` and renamed into place when complete.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import export as jax_export

from deres_jax.genrec import beam
from deres_jax.genrec import cobra
from deres_jax.genrec import family as genrec_family
from deres_jax.genrec import sasrec
from deres_jax.genrec import tasks
from deres_jax.genrec import tiger
from deres_jax.serving import bundle
from deres_jax.serving import from_workdir
from deres_jax.serving.retriever import Retriever

FORMAT = 'deres_jax.serving.genrec/1'


@dataclasses.dataclass
class GenrecRestored:
  """A genrec run's retriever task (tokenizer loaded, never refitted) and its best parameters."""
  config: ml_collections.ConfigDict
  task: object          # tasks.TigerTask, tasks.CobraTask or tasks.SASRecTask
  params: dict
  step: int
  summary: dict


def restore(workdir: str) -> GenrecRestored:
  """The task and the parameters a genrec run evaluated its test split with (best, else newest)."""
  config = from_workdir.read_config(workdir)
  if config.get('family') != 'genrec':
    raise from_workdir.WorkdirError(f'{workdir!r} is not a generative-retrieval run (family '
                                    f'{config.get("family")!r})')
  if config.system != 'sasrec' and not os.path.isfile(os.path.join(workdir, 'tokenizer', 'sids.npz')):
    raise from_workdir.WorkdirError(f'{workdir!r} has no finished tokenizer (tokenizer/sids.npz)')
  data = genrec_family.load(config)
  task, _ = genrec_family.make_task(config, data, workdir)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          jax.eval_shape(task.init, jax.random.PRNGKey(0)))
  step, params = from_workdir.restore_checkpoint(workdir, config, abstract)
  summary = from_workdir.read_summary(workdir)
  return GenrecRestored(config, task, params, step, summary)


def recommend_fn(task, k: int):
  """(params, arrays, inputs [b, S]) -> (items [b, k], scores [b, k]) of a task (see module doc).

  `arrays` = `_arrays(task, params)`: none for SASRec, the trie for TIGER, the trie and
  `item_vectors` for COBRA."""
  if isinstance(task, tasks.SASRecTask):
    def top_k(params, arrays, hist_bl):
      del arrays
      scores = sasrec.last_scores(task.model, params, hist_bl)[:, 1:]   # column 0 is the padding
      s, i = jax.lax.top_k(scores.astype(jnp.float32), k)
      return i + 1, s
    return top_k
  init, step = task.cached_step
  depth, children = task.trie.max_depth, task.trie.max_children

  def search(params, arrays, enc_bs):
    mem = task.model.apply({'params': params}, enc_bs, method=tiger.Tiger.encode)
    # The jit-free body of the search: its batch size is the symbolic b of the export.
    beams = beam.beam_search_cached.__wrapped__(init, step, arrays, (params, mem, enc_bs), enc_bs.shape[0], k,
                                                children, depth)
    if isinstance(task, tasks.CobraTask):   # BeamFusion of the K beams, as CobraTask ranks them
      return cobra.fuse_beams(task.model, params, mem, enc_bs, beams, arrays['item_vectors'], task.cobra, k)
    return beams[0], beams[1]
  return search


def manifest_info(r: GenrecRestored) -> dict:
  """What the Retriever needs besides the functions: system, catalogue, history cap, user tokens."""
  task = r.task
  info = {'system': r.config.system, 'num_items': int(task.data.num_items), 'max_len': int(task.data.max_len)}
  if not isinstance(task, tasks.SASRecTask):
    info.update(first_user=int(task.layout.first_user), num_user_tokens=int(task.layout.num_user_tokens),
                id_length=int(task.item_tok.shape[1]), trie_nodes=int(len(task.trie.node_item)),
                user_token=task.layout.user_token, compact_ids=bool(task.layout.compact))
  if isinstance(task, tasks.CobraTask):
    c = task.cobra
    info['cobra'] = {'item_vectors': c.item_vectors, 'dense_dim': int(c.dense_dim), 'candidates': c.candidates,
                     'fusion_weight': float(c.fusion_weight), 'cos_scale': float(c.cos_scale)}
  return info


def _arrays(task, params) -> dict:
  """The arrays the exported function takes besides the parameters (see `recommend_fn`)."""
  if isinstance(task, tasks.SASRecTask):
    return {}
  if isinstance(task, tasks.CobraTask):
    return dict(task.trie_arrays, item_vectors=jax.device_get(task.item_vectors(params)))
  return task.trie_arrays


def input_width(task) -> int:
  return task.data.max_len if isinstance(task, tasks.SASRecTask) else task.model.max_enc_len


def in_process(workdir: str, beam_sizes=None, batch_size: int = 256) -> Retriever:
  """The retriever of a genrec run as a `Retriever`, jit-compiled in process (no export)."""
  r = restore(workdir)
  beam_sizes = tuple(beam_sizes or (r.config.eval.beam_size,))
  arrays = _arrays(r.task, r.params)
  fns = {k: _bind(jax.jit(recommend_fn(r.task, k)), r.params, arrays) for k in beam_sizes}
  info = dict(manifest_info(r), step=r.step, workdir=os.path.abspath(workdir), beam_sizes=list(beam_sizes))
  return Retriever(fns, info, None if isinstance(r.task, tasks.SASRecTask) else r.task.item_tok, batch_size)


def _bind(fn, params, arrays):
  return lambda x: fn(params, arrays, x)


def export(workdir: str, out: str, platforms=bundle.PLATFORMS, beam_sizes=None,
           overwrite: bool = False, restored: GenrecRestored | None = None) -> dict:
  """Exports the retriever of the genrec run `workdir` to the directory `out`.

  Args:
    workdir: a genrec training workdir (config.family 'genrec': TIGER, COBRA or SASRec) with a checkpoint.
    out: the model directory to write.
    platforms: the platforms the StableHLO is lowered for.
    beam_sizes: the beam sizes (TIGER, COBRA) or top-K sizes (SASRec) to export, one function each;
      None = the run's eval.beam_size. A request for k uses the smallest exported size >= k.
    overwrite: replace an existing `out`.
    restored: `restore(workdir)` if already done (tests reuse it).
  Returns:
    The manifest (also written to out/manifest.json).
  """
  out = bundle.check_out(out, overwrite)
  r = restored or restore(workdir)
  beam_sizes = sorted({int(k) for k in (beam_sizes or (r.config.eval.beam_size,))})
  if beam_sizes[0] < 1:
    raise ValueError(f'beam sizes must be positive, got {beam_sizes}')
  if isinstance(r.task, tasks.SASRecTask) and beam_sizes[-1] > r.task.data.num_items:
    raise ValueError(f'top-K sizes {beam_sizes} exceed the catalogue of {r.task.data.num_items} items')
  b, = jax_export.symbolic_shape('b')
  shape = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
  arrays = _arrays(r.task, r.params)
  params, arrays_shape = jax.tree.map(shape, r.params), jax.tree.map(shape, arrays)
  inputs = jax.ShapeDtypeStruct((b, input_width(r.task)), np.int32)
  exported = {k: jax_export.export(jax.jit(recommend_fn(r.task, k)), platforms=tuple(platforms))(
      params, arrays_shape, inputs) for k in beam_sizes}
  test = r.summary.get('test', {})
  manifest = {
      'format': FORMAT, 'kind': 'genrec', **bundle.versions(),
      'workdir': os.path.abspath(workdir), 'model': r.config.system, 'step': r.step,
      'platforms': list(platforms), 'beam_sizes': beam_sizes, 'input_width': input_width(r.task),
      **manifest_info(r),
      'tokenizer': r.summary.get('tokenizer'),
      'metrics': {k: v for k, v in test.items() if isinstance(v, float)},
  }

  def write_files(tmp):
    for k, e in exported.items():
      bundle.save_exported(os.path.join(tmp, f'retriever_k{k}.jaxexport'), e)
    bundle.save_params(tmp, r.params)
    if not isinstance(r.task, tasks.SASRecTask):
      np.savez(os.path.join(tmp, 'trie.npz'), **{k: np.asarray(v) for k, v in r.task.trie_arrays.items()})
      if 'item_vectors' in arrays:
        np.savez(os.path.join(tmp, 'item_vectors.npz'), item_vectors=np.asarray(arrays['item_vectors']))
      table = os.path.join(workdir, 'tokenizer', 'sids.npz')
      with np.load(table) as z:
        np.savez(os.path.join(tmp, 'items.npz'), codes=z['codes'], level_sizes=z['level_sizes'],
                 item_tokens=r.task.item_tok)
  bundle.write(out, manifest, write_files)
  return manifest
