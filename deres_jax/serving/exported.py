"""`load(model_dir)`: an exported model as a `Scorer` (CTR), a `ScenarioScorer` (multi-scenario) or a
`Retriever` (genrec), without the training code.

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
from deres_jax.serving.retriever import Retriever
from deres_jax.serving.scenario_scorer import ScenarioScorer
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


def _manifest(model_dir: str) -> dict:
  path = os.path.join(model_dir, 'manifest.json')
  if not os.path.isfile(path):
    raise ModelDirError(f'{model_dir!r} is not an exported model directory (no manifest.json); '
                        'write one with launch/export.py')
  with open(path) as f:
    return json.load(f)


def _deserialize(path: str):
  """The jax.export function in `path`, checked to run on this machine's platform."""
  with open(path, 'rb') as f:
    exported = jax_export.deserialize(bytearray(f.read()))
  platform = jax.default_backend()
  if platform not in exported.platforms and not (platform == 'gpu' and 'cuda' in exported.platforms):
    raise ModelDirError(f'the model was exported for {list(exported.platforms)}, not {platform!r}: '
                        f'export again with --platforms={platform}')
  return exported


def _params(model_dir: str):
  with np.load(os.path.join(model_dir, 'params.npz')) as z:
    return jax.device_put(unflatten_params({k: z[k] for k in z.files}))


def load_vocab(model_dir: str, names) -> tuple:
  """Per categorical field `names[j]` the int64 keys in id order (`bundle.save_vocab` wrote them)."""
  with np.load(os.path.join(model_dir, 'vocab.npz')) as z:
    return tuple(z[f] for f in names)


def _load_genrec(model_dir: str, manifest: dict, batch_size: int) -> Retriever:
  """A genrec model directory (serving/genrec_export.py: TIGER, COBRA, SASRec) as a Retriever."""
  system = manifest['system']
  need = ['params.npz'] + [f'retriever_k{k}.jaxexport' for k in manifest['beam_sizes']]
  need += [] if system == 'sasrec' else ['trie.npz', 'items.npz']
  need += ['item_vectors.npz'] if system == 'cobra' else []
  missing = [f for f in need if not os.path.isfile(os.path.join(model_dir, f))]
  if missing:
    raise ModelDirError(f'{model_dir!r} is an incomplete genrec model directory (missing {", ".join(missing)})')
  params, arrays, item_tokens = _params(model_dir), {}, None
  if system != 'sasrec':
    with np.load(os.path.join(model_dir, 'trie.npz')) as z:
      arrays = {k: z[k] for k in z.files}
    if system == 'cobra':   # the dense item vectors BeamFusion scores against
      with np.load(os.path.join(model_dir, 'item_vectors.npz')) as z:
        arrays['item_vectors'] = z['item_vectors']
    arrays = jax.device_put(arrays)
    with np.load(os.path.join(model_dir, 'items.npz')) as z:
      item_tokens = z['item_tokens']

  def bind(k):
    call = jax.jit(_deserialize(os.path.join(model_dir, f'retriever_k{k}.jaxexport')).call)
    return lambda x: call(params, arrays, x)
  return Retriever({k: bind(k) for k in manifest['beam_sizes']}, manifest, item_tokens,
                   min(batch_size, 256))


def _load_multiscenario(model_dir: str, manifest: dict, batch_size: int) -> ScenarioScorer:
  """A multi-scenario model directory (serving/multiscenario_export.py) as a ScenarioScorer."""
  missing = [f for f in ('model.jaxexport', 'params.npz') if not os.path.isfile(os.path.join(model_dir, f))]
  if missing:
    raise ModelDirError(f'{model_dir!r} is an incomplete multi-scenario model directory (missing {", ".join(missing)})')
  call, params = jax.jit(_deserialize(os.path.join(model_dir, 'model.jaxexport')).call), _params(model_dir)
  vocab, seq_vocab = None, None   # an export without vocabularies (synthetic data, or made before they were saved): ids
  if manifest.get('vocabulary') == 'raw':
    if not os.path.isfile(os.path.join(model_dir, 'vocab.npz')):
      raise ModelDirError(f'{model_dir!r} is an incomplete multi-scenario model directory (missing vocab.npz)')
    vocab = load_vocab(model_dir, manifest['cat_names'])
    # A sequence field that shares a categorical field's vocabulary reads that field's keys.
    seq_vocab = load_vocab(model_dir, [s['vocab'] for s in manifest.get('sequences', ())])
  return ScenarioScorer(lambda batch: np.asarray(call(params, batch)), manifest, batch_size, vocab, seq_vocab)


def load(model_dir: str, batch_size: int = 1024):
  """The exported model in `model_dir` (`launch/export.py` writes it).

  Args:
    model_dir: the directory written by `deres_jax.serving.export.export` (CTR) or
      `genrec_export.export` (generative retrieval).
    batch_size: the most rows (CTR) or histories (genrec, at most 256) per call of the model.
  Returns:
    A Scorer (CTR: `score_rows`), a ScenarioScorer (multi-scenario: `score_rows`, rows with a
    `scenario`), or a Retriever (genrec: `recommend(histories, k)`); `.info`
    is the manifest (schema or catalogue, versions, step, metrics at export).
  """
  manifest = _manifest(model_dir)
  if manifest.get('kind') == 'genrec':
    return _load_genrec(model_dir, manifest, batch_size)
  if manifest.get('kind') == 'multiscenario':
    return _load_multiscenario(model_dir, manifest, batch_size)
  missing = [f for f in FILES if not os.path.isfile(os.path.join(model_dir, f))]
  if missing:
    raise ModelDirError(f'{model_dir!r} is not an exported model directory (missing {", ".join(missing)}); '
                        'write one with launch/export.py')
  exported = _deserialize(os.path.join(model_dir, 'model.jaxexport'))
  params = _params(model_dir)
  vocab = load_vocab(model_dir, manifest['schema']['cat_names'])
  # A sequence field that shares a scalar field's vocabulary reads that field's keys.
  seq_vocab = load_vocab(model_dir, [s['vocab'] for s in manifest.get('sequences', ())])
  spec = features.InputSpec.from_json(manifest['row_spec'], vocab, seq_vocab)
  call = jax.jit(exported.call)
  return Scorer(spec, lambda batch: np.asarray(call(params, batch)), batch_size, manifest)
