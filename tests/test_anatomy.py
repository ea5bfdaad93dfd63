"""deres_jax/anatomy.py: depth-attention weights and gates collected from a tiny model.

The weights are checked against values computed another way (softmax sums, SiLU(score)/N by
hand from the query and the sources), and sowing is checked to leave normal training's traced
program unchanged.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax import anatomy
from deres_jax.models.transformer import CTRTransformer

T, B, D = 4, 6, 16


def tiny(connector, **kw):
  """Depth 2 with block_size 2: 4 units + the output, the last ones see a completed block."""
  return CTRTransformer(vocab_sizes=(11, 7, 5, 9), num_dense=2, embed_dim=8, tokenizer='group',
                        num_tokens=T, depth=2, width=D, num_heads=2, block_size=2,
                        head_hidden=(8,), connector=connector, **kw)


def batch():
  rng = np.random.default_rng(0)
  return {'cat': rng.integers(0, 5, (B, 4)).astype(np.int32),
          'dense': rng.normal(size=(B, 2)).astype(np.float32)}


def init(model, randomise=()):
  """Parameters with the queries and gate logits at their init (0), other weights random;
  every leaf named in `randomise` is replaced by N(0, 2^2) values.

  Built from shapes with numpy: a jitted `model.init` takes ~8 s to compile here (its random
  initialisers), more than the rest of this file.
  """
  rng = np.random.default_rng(1)
  names = lambda path: {getattr(k, 'key', None) for k in path}  # noqa: E731

  def leaf(path, x):
    if names(path) & set(randomise):
      return 2.0 * rng.standard_normal(x.shape, np.float32)
    if names(path) & {'query', 'gate'}:
      return np.zeros(x.shape, np.float32)  # as initialised (AttnRes §3, DeRes gate_init = 0)
    return 0.3 * rng.standard_normal(x.shape, np.float32)
  return jax.tree_util.tree_map_with_path(leaf, _shapes(model))


@functools.lru_cache(maxsize=None)
def _shapes(model):
  return jax.eval_shape(lambda: nn.unbox(model.init(jax.random.PRNGKey(0), batch())['params']))


UNITS = ['backbone/block_0/mixer_res', 'backbone/block_0/ffn_res', 'backbone/block_1/mixer_res',
         'backbone/block_1/ffn_res', 'backbone/out_res']
VISIBLE = [1, 2, 2, 3, 3]  # emb; emb + partial block 0; emb + block 0; + partial block 1; all


def test_softmax_weights_per_unit_in_order_and_sum_to_one():
  model = tiny('attnres')
  w = anatomy.depth_weights(model, init(model, ['query']), batch(), per_example=True)
  assert list(w) == UNITS
  assert [x.shape for x in w.values()] == [(n, T, B) for n in VISIBLE]
  for x in w.values():
    np.testing.assert_allclose(x.sum(0), 1.0, rtol=1e-5)
    assert (x >= 0).all()
  assert anatomy.gates(init(model)) == {}  # AttnRes has no gate
  mean = anatomy.depth_weights(model, init(model, ['query']), batch())
  np.testing.assert_allclose(mean[UNITS[3]], w[UNITS[3]].mean(-1), rtol=1e-6)


def test_scanned_layers_give_the_same_units_cut_to_the_visible_sources():
  model = tiny('attnres', scan_layers=True)
  w = anatomy.depth_weights(model, init(model, ['query']), batch())
  assert list(w) == ['backbone/blocks[0]/mixer_res', 'backbone/blocks[0]/ffn_res',
                     'backbone/blocks[1]/mixer_res', 'backbone/blocks[1]/ffn_res', 'backbone/out_res']
  assert [x.shape for x in w.values()] == [(n, T) for n in VISIBLE]
  for x in w.values():
    np.testing.assert_allclose(x.sum(0), 1.0, rtol=1e-5)


def test_silu_weights_are_zero_at_init_and_silu_score_over_n_by_hand():
  model = tiny('deres')
  w0 = anatomy.depth_weights(model, init(model), batch(), per_example=True)
  assert all((x == 0).all() for x in w0.values())  # zero queries: SiLU(0) = 0, DeRes = Pre-Norm
  params = init(model, ['query'])
  w = anatomy.depth_weights(model, params, batch(), per_example=True)
  assert any((x < 0).any() for x in w.values())  # Pointwise AttnRes can forget a source
  # Unit 1 (block 0's FFN) sees v_0 = the embedding and v_1 = the attention output f_0.
  capture = jax.jit(lambda p, b: model.apply({'params': p}, b, capture_intermediates=True,
                                             mutable=['intermediates'])[1]['intermediates'])
  inter = capture(params, batch())
  emb = inter['tokenizer']['__call__'][0][0].transpose(1, 0, 2)      # [T, B, D]
  f0 = inter['backbone']['block_0']['mixer']['__call__'][0]          # [T, B, D]
  query = params['backbone']['block_0']['ffn_res']['query']          # [D]
  scores = [jnp.einsum('tbd,d->tb', v, query) / jnp.sqrt(jnp.mean(v * v, -1) + 1e-6) for v in (emb, f0)]
  expected = np.stack([jax.nn.silu(s) / 2 for s in scores])
  np.testing.assert_allclose(w['backbone/block_0/ffn_res'], expected, rtol=1e-4, atol=1e-6)


def test_gates_are_sigmoid_of_the_params_in_unit_order():
  model = tiny('deres')
  params = init(model, ['gate'])
  w = anatomy.depth_weights(model, params, batch())
  g = anatomy.gates(params, order=w)
  assert list(g) == UNITS
  theta = params['backbone']['block_1']['mixer_res']['gate']
  assert g['backbone/block_1/mixer_res'].shape == (D,)
  np.testing.assert_allclose(g['backbone/block_1/mixer_res'], jax.nn.sigmoid(theta), rtol=1e-6)
  scalar = tiny('deres', gate='scalar')
  assert [x.shape for x in anatomy.gates(init(scalar)).values()] == [(1,)] * 5


def test_sowing_leaves_normal_training_unchanged():
  """Without mutable=['intermediates'] the jaxpr equals the one with `sow` removed."""
  model = tiny('deres')
  params = init(model, ['query'])
  loss = lambda p: jnp.sum(model.apply({'params': p}, batch())[0])  # noqa: E731
  with_sow = str(jax.make_jaxpr(jax.grad(loss))(params))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(nn.Module, 'sow', lambda self, *a, **k: False)
    without = str(jax.make_jaxpr(jax.grad(loss))(params))
  assert with_sow == without


def test_matrices_pad_invisible_sources_and_count_negatives():
  w = {'a': np.array([[-1.0, 1.0]]), 'b': np.array([[0.5, -0.5], [-2.0, -1.0]])}
  mat = anatomy.unit_source_matrix(w)
  np.testing.assert_allclose(mat, [[0.0, np.nan], [0.0, -1.5]])
  np.testing.assert_allclose(anatomy.negative_fraction(w), [[0.5, np.nan], [0.5, 1.0]])
  assert anatomy.source_names(3) == ['emb', 'block 0', 'block 1']


def test_heatmaps_draw_every_unit():
  matplotlib = pytest.importorskip('matplotlib')
  matplotlib.use('Agg')
  w = {'backbone/block_0/mixer_res': np.array([[[-0.1, 0.2]]]),
       'backbone/out_res': np.array([[[0.3, -0.4]], [[0.1, 0.0]]])}  # [N, T=1, B=2]
  fig = anatomy.plot_depth_weights(w)
  assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ['block_0/mixer', 'out']
  assert len(anatomy.plot_token_weights(w).axes) == 2 + 1  # a panel per unit, a colour bar
  assert anatomy.plot_negative(w) is not None
  assert anatomy.plot_gates({}) is None
  assert anatomy.plot_gates({'backbone/out_res': np.full(4, 0.5)}) is not None
  matplotlib.pyplot.close('all')
