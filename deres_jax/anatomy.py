"""Anatomy of a trained AttnRes / DeRes model: depth-attention weights and gates, as heatmaps.

Every AttnRes/DeRes connector sows its weights over the visible depth sources
(`self.sow('intermediates', 'depth_weights', alpha)`, alpha [N_sources, T, B]); DeRes also has a
gate parameter 'gate' (the logit theta; g = sigmoid(theta) in (0,1)^D or (0,1)) between the
Identity and the Attention path (research/deres.md §7). This module collects both:

    w = anatomy.depth_weights(model, params, batch)   # {unit: [N_j, T]}, in unit order
    g = anatomy.gates(params, order=w)                # {unit: [D] or [1]}, sigmoid applied
    anatomy.plot_depth_weights(w); anatomy.plot_gates(g)

Source n of a unit is the token embedding (n = 0) or AttnRes block n - 1 (the sum of that
block's unit outputs); a unit's last source is its own block's partial sum when the block has
already started. The output connector ('out') reads every block.

Entries are found by searching the trees for the names 'depth_weights' and 'gate', not by
module path (the connector layout may change). Unit order is the order in which the model
calls the connector modules (`call_order`, recorded with `nn.intercept_methods` while
tracing): dicts of variables come back sorted by name from jit and nn.scan.
Sowing costs nothing in normal training: without `mutable=['intermediates']` `sow` is a no-op,
so the traced program is the same as without it (tests/test_anatomy.py,
benchmarks/bench_anatomy.py).
"""
import functools
import re

import flax.linen as nn
import jax
import numpy as np

WEIGHTS = 'depth_weights'  # the sown name of the weights over depth sources
GATE = 'gate'              # the DeRes gate logit parameter


def find(tree, name: str) -> list:
  """[(path tuple, leaf)] of every entry called `name` in a nested dict, in insertion order."""
  out = []

  def walk(node, path):
    for k, v in node.items():
      if k == name:
        out.append((path, v))
      elif hasattr(v, 'items'):
        walk(v, path + (k,))
  walk(tree, ())
  return out


def _label(path, layer=None) -> str:
  """'block_0/mixer_res', or 'blocks[3]/mixer_res' for layer 3 of a scanned stack."""
  if layer is None:
    return '/'.join(path)
  return '/'.join(path[:-2] + (f'{path[-2]}[{layer}]', path[-1]))


def _by_unit(entries, stacked_ndim: int) -> list:
  """[(label, array, stacked)] with the layers of a scanned stack (ndim == stacked_ndim) interleaved.

  Under nn.scan one sown entry (or parameter) holds every layer: [L, ...]. The connectors of
  one scanned block (e.g. mixer_res, ffn_res), sorted into call order, follow each other, so
  unit order is layer-major over the run of consecutive stacked entries of the same stack.
  """
  out, i = [], 0
  while i < len(entries):
    path, x = entries[i]
    if x.ndim != stacked_ndim:
      out.append((_label(path), x, False))
      i += 1
      continue
    k = i
    while k < len(entries) and entries[k][1].ndim == stacked_ndim and entries[k][0][:-1] == path[:-1]:
      k += 1
    for layer in range(x.shape[0]):
      out.extend((_label(p, layer), v[layer], True) for p, v in entries[i:k])
    i = k
  return out


def visible_sources(j: int, block_size: int, num_slots: int) -> int:
  """Depth sources unit j reads: the embedding, completed blocks and a started partial block."""
  return min(num_slots, 1 + j // block_size + (1 if j % block_size else 0))


def call_order(model, *args, **kwargs) -> list:
  """Module paths in the order `model.apply(*args, **kwargs)` first calls them (trace only)."""
  seen = []

  def record(f, a, kw, context):
    if context.module.scope is not None and context.module.path not in seen:
      seen.append(context.module.path)
    return f(*a, **kw)
  with nn.intercept_methods(record):
    jax.eval_shape(functools.partial(model.apply, *args, **kwargs))
  return seen


def depth_weights(model, params, batch, per_example: bool = False, **apply_kw) -> dict:
  """The depth-attention weights of every AttnRes/DeRes unit on one batch.

  Args:
    model: a Flax model whose connectors sow 'depth_weights' (e.g. `models.build(...)`).
    params: its parameters (boxed or plain).
    batch: an input batch for `model.apply`.
    per_example: keep the batch axis ([N_j, T, B]) instead of averaging over it ([N_j, T]).
    **apply_kw: further arguments of `model.apply` (e.g. train=False).
  Returns:
    {unit label: float32 numpy array [N_j, T] (or [N_j, T, B])}, in unit order (the output
    connector last); N_j the sources unit j sees. Under scan_layers the sown buffer holds every
    slot; the invisible ones are cut using `model.block_size`.
  """
  params = nn.unbox(params)
  variables = {'params': params}
  paths = []

  def collect(v, b):
    _, state = model.apply(v, b, mutable=['intermediates'], **apply_kw)
    found = find(state.get('intermediates', {}), WEIGHTS)
    paths[:] = [path for path, _ in found]
    # Each sow appends to a tuple; one sow per connector call, so take the last value.
    return [x[-1] for _, x in found]

  values = jax.device_get(jax.jit(collect)(variables, batch))
  # Unit order is call order: the dict of intermediates is sorted by name under nn.scan (and
  # by jit), which puts a block's 'ffn_res' before its 'mixer_res'.
  rank = {p: i for i, p in enumerate(call_order(model, variables, batch, mutable=['intermediates'],
                                                **apply_kw))}
  entries = sorted(zip(paths, values), key=lambda e: rank.get(e[0], len(rank)))
  units = _by_unit([(p, np.asarray(v, np.float32)) for p, v in entries], stacked_ndim=4)
  out = {}
  for j, (label, w, stacked) in enumerate(units):
    if stacked and hasattr(model, 'block_size'):  # a scanned buffer: cut the masked slots
      w = w[:visible_sources(j, model.block_size, w.shape[0])]
    out[label] = w if per_example else w.mean(axis=-1)
  return out


def _natural(label: str):
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', label)]


def gates(params, order=None) -> dict:
  """g = sigmoid(theta) of every DeRes gate, per unit.

  Args:
    params: model parameters (boxed or plain).
    order: unit labels (e.g. the keys of `depth_weights(...)`) giving the unit order; parameter
      trees restored or passed through jax.tree.map have their keys sorted, which puts a
      block's 'ffn' before its 'mixer'. Without it, labels are sorted naturally.
  Returns:
    {unit label: numpy array [D] (vector gate) or [1] (scalar gate)}; empty without gates.
  """
  found = [(p, np.asarray(jax.device_get(v), np.float32)) for p, v in find(nn.unbox(params), GATE)]
  units = {label: g for label, g, _ in _by_unit(found, stacked_ndim=2)}
  rank = {k: i for i, k in enumerate(order or ())}
  labels = sorted(units, key=lambda k: (rank.get(k, len(rank)), _natural(k)))
  return {k: 1.0 / (1.0 + np.exp(-units[k])) for k in labels}


def short(label: str) -> str:
  """A display name: 'backbone/block_1/mixer_res' -> 'block_1/mixer'."""
  parts = [p[:-4] if p.endswith('_res') else p for p in label.split('/')]
  return '/'.join(p for p in parts if p not in ('backbone', 'blocks')) or label


def source_names(n: int) -> list:
  """Names of depth sources 0..n-1: the embedding, then the AttnRes blocks."""
  return ['emb'] + [f'block {i}' for i in range(n - 1)]


def unit_source_matrix(weights: dict, reduce=np.mean) -> np.ndarray:
  """[units, max sources] of `reduce` over tokens (and examples); NaN where a unit cannot see."""
  n = max(w.shape[0] for w in weights.values())
  mat = np.full((len(weights), n), np.nan, np.float32)
  for i, w in enumerate(weights.values()):
    mat[i, :w.shape[0]] = reduce(w.reshape(w.shape[0], -1), axis=1)
  return mat


def negative_fraction(weights: dict) -> np.ndarray:
  """[units, max sources]: share of tokens (x examples) with a negative ('forgetting') weight."""
  return unit_source_matrix(weights, lambda x, axis: np.mean(x < 0, axis=axis))


# ------------------------------------------------------------------ Heatmaps (matplotlib).


def _heatmap(ax, mat, xlabels, ylabels, cmap, vmin, vmax, title, annotate=True):
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps[cmap].with_extremes(bad='0.85')  # grey: a source the unit cannot see
  im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=vmin, vmax=vmax, aspect='auto')
  ax.set_xticks(range(len(xlabels)), xlabels, rotation=45, ha='right', fontsize=8)
  ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
  ax.set_title(title, fontsize=10)
  if annotate and mat.size <= 120:
    for (i, k), v in np.ndenumerate(mat):
      if np.isfinite(v):
        ax.text(k, i, f'{v:.2g}', ha='center', va='center', fontsize=7)
  return im


def _symmetric(mat):
  """Colour limits centred on 0, so negative weights show in a colour of their own."""
  m = np.nanmax(np.abs(mat)) if np.isfinite(mat).any() else 1.0
  return -(m or 1.0), (m or 1.0)


def plot_depth_weights(weights: dict, title: str = 'depth-attention weight', ax=None):
  """Heatmap unit x source of the weights averaged over tokens and examples; returns the Figure."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  mat = unit_source_matrix(weights)
  if ax is None:
    _, ax = plt.subplots(figsize=(1.2 + 0.8 * mat.shape[1], 0.8 + 0.35 * mat.shape[0]))
  vmin, vmax = (0.0, 1.0) if np.nanmin(mat) >= 0 else _symmetric(mat)
  im = _heatmap(ax, mat, source_names(mat.shape[1]), [short(k) for k in weights], 'RdBu_r' if vmin < 0
                else 'viridis', vmin, vmax, title)
  ax.set_xlabel('source (earlier block)')
  ax.set_ylabel('unit')
  ax.figure.colorbar(im, ax=ax)
  return ax.figure


def plot_token_weights(weights: dict, units=None, title: str = 'per token', max_cols: int = 4):
  """One heatmap source x token per unit (weights averaged over examples); returns the Figure."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  units = list(units or weights)
  mats = [weights[u] if weights[u].ndim == 2 else weights[u].mean(-1) for u in units]
  lim = max(float(np.abs(m).max()) for m in mats) or 1.0
  signed = min(float(m.min()) for m in mats) < 0
  cols = min(max_cols, len(units))
  rows = -(-len(units) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, layout='constrained')
  for ax, u, m in zip(axes.flat, units, mats):
    im = _heatmap(ax, m, [f't{t}' for t in range(m.shape[1])], source_names(m.shape[0]),
                  'RdBu_r' if signed else 'viridis', -lim if signed else 0.0, lim, short(u),
                  annotate=False)
  for ax in list(axes.flat)[len(units):]:
    ax.axis('off')
  fig.colorbar(im, ax=axes.ravel().tolist())
  fig.suptitle(title)
  return fig


def plot_negative(weights: dict, title: str = 'share of negative (forgetting) weights', ax=None):
  """Heatmap unit x source of the share of tokens x examples with weight < 0; returns the Figure."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  mat = negative_fraction(weights)
  if ax is None:
    _, ax = plt.subplots(figsize=(1.2 + 0.8 * mat.shape[1], 0.8 + 0.35 * mat.shape[0]))
  im = _heatmap(ax, mat, source_names(mat.shape[1]), [short(k) for k in weights], 'Reds', 0.0, 1.0, title)
  ax.set_xlabel('source (earlier block)')
  ax.figure.colorbar(im, ax=ax)
  return ax.figure


def plot_gates(gate_values: dict, title: str = 'gate g = sigmoid(theta)', ax=None, center=0.5):
  """Heatmap unit x hidden dimension of the DeRes gates; returns the Figure (None without gates).

  merge='gated' (u = g*h + (1-g)*a): g is the Identity path's share; merge='add'
  (u = h + g*a): g is how much of the Attention path is added to the Identity path. The colours are centred
  on `center` (the initial g, sigmoid(gate_init)) and span the largest move from it, so small
  moves show; center=None draws the whole range 0..1.
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  if not gate_values:
    return None
  d = max(g.shape[0] for g in gate_values.values())
  mat = np.full((len(gate_values), d), np.nan, np.float32)
  for i, g in enumerate(gate_values.values()):
    mat[i, :g.shape[0]] = g
  if ax is None:
    _, ax = plt.subplots(figsize=(2.0 + 0.25 * d, 0.8 + 0.35 * len(gate_values)))
  if center is None:
    cmap, vmin, vmax = 'viridis', 0.0, 1.0
  else:
    span = float(np.nanmax(np.abs(mat - center))) or 0.01
    cmap, vmin, vmax = 'PuOr_r', center - span, center + span
  im = _heatmap(ax, mat, [str(k) if d <= 32 or k % 8 == 0 else '' for k in range(d)],
                [short(k) for k in gate_values], cmap, vmin, vmax, title, annotate=False)
  ax.set_xlabel('hidden dimension')
  ax.figure.colorbar(im, ax=ax)
  return ax.figure
