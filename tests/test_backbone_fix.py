"""The CTR backbone fix (issue 26): silent residual branches at init, the DeRes merges, the
matrix-valued learnable residual, and a learning test on a rule a DNN learns."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax import models
from deres_jax.data.schema import Schema
from deres_jax.models import connectors
from deres_jax.models import layers
from deres_jax.models.transformer import CTRTransformer

SCHEMA = Schema(dense_names=('d0', 'd1'), cat_names=('c0', 'c1', 'c2'), vocab_sizes=(7, 5, 9))


def _batch(n=6, seed=0):
  r = np.random.default_rng(seed)
  return {'dense': r.normal(size=(n, 2)).astype(np.float32),
          'cat': np.stack([r.integers(0, v, n) for v in SCHEMA.vocab_sizes], 1).astype(np.int32),
          'label': r.integers(0, 2, n).astype(np.float32)}


def _model(**kw):
  base = dict(vocab_sizes=SCHEMA.vocab_sizes, num_dense=2, embed_dim=8, width=8, num_heads=2,
              depth=2, block_size=2, head_hidden=(8,))
  return CTRTransformer(**dict(base, **kw))


def _tokens_and_backbone(model, params, batch):
  """The tokenizer's tokens [B, T, D] and the backbone's output [T, B, D] at `params`."""
  tokens = model.make_tokenizer(name=None).apply({'params': params['tokenizer']}, batch)[0]
  out, _ = model.make_backbone(name=None).apply({'params': params['backbone']},
                                                tokens.transpose(1, 0, 2))
  return tokens, out


@pytest.mark.parametrize('name', ['rankmixer', 'tokenmixer_large', 'unimixer'])
def test_zero_branch_init_silences_every_ffn(name):
  """Models with a parameter-free token mixer: every FFN's down projection starts at zero."""
  model = models.build(models.model_config(name), SCHEMA)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), _batch())['params'])
  downs = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
           if any(getattr(k, 'key', '') == 'ffn' for k in path)
           and any(getattr(k, 'key', '') == 'down' for k in path)
           and getattr(path[-1], 'key', '') == 'kernel']
  assert downs and all(not np.any(d) for d in downs)


@pytest.mark.parametrize('name', ['transformer', 'onetrans', 'hiformer', 'rankmixer_ls0'])
def test_zero_branch_init_makes_every_block_the_identity(name):
  """branch_init='zero': with a PreNorm connector the backbone output at init is RMSNorm(tokens);
  RankMixer only with its mixing LayerScale at zero (`mix_scale='zero'`)."""
  cfg = models.model_config(name.removesuffix('_ls0'))
  with cfg.unlocked():
    cfg.connector = 'prenorm'
    if name == 'rankmixer_ls0':
      cfg.mix_scale = 'zero'
  model = models.build(cfg, SCHEMA)
  batch = _batch()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)['params'])
  tokens, out = _tokens_and_backbone(model, params, batch)
  scale = params['backbone']['out_norm']['scale']
  np.testing.assert_allclose(out, layers.rms_normalize(tokens.transpose(1, 0, 2)) * scale,
                             rtol=1e-5, atol=1e-5)


def test_rankmixer_mixing_without_layer_scale_is_not_the_identity():
  """The paper's parameter-free mixing adds a permuted copy of the normalised stream at init."""
  cfg = models.model_config('rankmixer')
  with cfg.unlocked():
    cfg.connector = 'prenorm'
  model = models.build(cfg, SCHEMA)
  batch = _batch()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)['params'])
  tokens, out = _tokens_and_backbone(model, params, batch)
  identity = layers.rms_normalize(tokens.transpose(1, 0, 2)) * params['backbone']['out_norm']['scale']
  assert not np.allclose(out, identity, atol=1e-3)


def test_default_branch_init_is_not_the_identity():
  model = _model(connector='prenorm', branch_init='default')
  batch = _batch()
  params = model.init(jax.random.PRNGKey(0), batch)['params']
  tokens, out = _tokens_and_backbone(model, params, batch)
  assert np.abs(np.asarray(out) - np.asarray(layers.rms_normalize(tokens.transpose(1, 0, 2)))).max() > 1e-2


def _deres(merge, gate='vector', theta=None, d=4):
  conn = connectors.make('deres', width=d, num_tokens=2, num_units=2, block_size=1, merge=merge,
                         gate=gate, depth_weights='silu', query_init_scale=1.0)
  state = conn.init_state(jnp.ones((2, 3, d)) * jnp.arange(1, d + 1))
  state = conn.update(state, jnp.full((2, 3, d), 0.5), 0) if False else state
  variables = conn.init(jax.random.PRNGKey(1), state, 0)
  if theta is not None:
    variables = jax.tree.map(lambda x: x, variables)
    variables['params']['gate'] = jnp.asarray(theta, jnp.float32)
  return conn, variables, state


@pytest.mark.parametrize('merge', ['gated', 'additive', 'add'])
def test_merges_reduce_to_their_formulas(merge):
  """u = g*h + (1-g)*a ('gated'), h + a ('additive'), h + g*a ('add'), a = the AttnRes path."""
  theta = np.array([-1.0, 0.0, 0.5, 2.0], np.float32)
  conn, variables, state = _deres(merge, theta=theta if merge != 'additive' else None)
  u = np.asarray(conn.apply(variables, state, 0))
  a = np.asarray(conn.apply(variables, state, 0, method=lambda m, s, j: m.aggregate(s, j)))
  h = np.asarray(state['h'])
  g = 1 / (1 + np.exp(-theta))
  want = {'gated': g * h + (1 - g) * a, 'additive': h + a, 'add': h + g * a}[merge]
  assert np.abs(a).max() > 1e-3  # random queries: the AttnRes path is not zero
  np.testing.assert_allclose(u, want, rtol=1e-5, atol=1e-6)
  assert ('gate' in variables.get('params', {})) == (merge != 'additive')


def test_matrix_residual_equals_prenorm_at_identity_init():
  """DeRes identity='matrix' (h M + f, M = I) with the identity path only is PreNorm at init."""
  batch = _batch()
  mat = _model(connector='deres', paths='identity', identity='matrix', branch_init='default')
  pre = _model(connector='prenorm', branch_init='default')
  params = mat.init(jax.random.PRNGKey(0), batch)['params']
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  mats = [p for p, _ in flat if any(getattr(k, 'key', '') == 'matrix' for k in p)]
  assert len(mats) == 4  # one D x D map per connected unit (2 blocks x 2 sublayers)
  for path, leaf in flat:
    if any(getattr(k, 'key', '') == 'matrix' for k in path):
      np.testing.assert_array_equal(leaf, np.eye(leaf.shape[0]))
  pre_params = pre.init(jax.random.PRNGKey(0), batch)['params']
  # PreNorm has no connector parameters: drop the residual maps and the trees agree.
  strip = lambda t: {k: strip(v) if isinstance(v, dict) else v for k, v in t.items()  # noqa: E731
                     if not k.endswith('_res')}
  assert jax.tree.structure(strip(params)) == jax.tree.structure(pre_params)
  np.testing.assert_allclose(mat.apply({'params': params}, batch)[0],
                             pre.apply({'params': strip(params)}, batch)[0], rtol=1e-5, atol=1e-6)
  # A moved matrix changes the output: the map is live.
  moved = jax.tree_util.tree_map_with_path(
      lambda p, x: x * 0.5 if any(getattr(k, 'key', '') == 'matrix' for k in p) else x, params)
  assert not np.allclose(mat.apply({'params': moved}, batch)[0], mat.apply({'params': params}, batch)[0])


def test_unknown_merge_is_a_clear_error():
  with pytest.raises(ValueError, match='merge must be one of'):
    model = _model(merge='convex')
    model.init(jax.random.PRNGKey(0), _batch())


def test_zero_branches_still_train():
  """At the zero init every output projection gets a gradient, so the blocks leave the identity."""
  batch = _batch()
  model = _model(connector='deres')
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)['params'])

  def loss(p):
    logits = model.apply({'params': p}, batch)[0]
    return jnp.mean(jax.nn.softplus(logits) - batch['label'] * logits)

  g = jax.grad(loss)(params)
  for i in range(2):
    assert float(jnp.abs(g['backbone'][f'block_{i}']['mixer']['out']['kernel']).max()) > 0
    assert float(jnp.abs(g['backbone'][f'block_{i}']['ffn']['down']['kernel']).max()) > 0


@pytest.mark.parametrize('name', ['transformer', 'onetrans', 'hiformer'])
def test_out_norm_none_keeps_the_token_scale(name):
  """out_norm='none' with silent branches: the backbone returns its tokens exactly, so a token
  scaled by c comes out scaled by c (a small embedding stays small; RMSNorm would undo it)."""
  cfg = models.model_config(name)
  with cfg.unlocked():
    cfg.connector, cfg.out_norm = 'prenorm', 'none'
  model = models.build(cfg, SCHEMA)
  batch = _batch()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)['params'])
  assert 'out_norm' not in params['backbone']
  tokens, out = _tokens_and_backbone(model, params, batch)
  np.testing.assert_allclose(out, tokens.transpose(1, 0, 2), rtol=1e-6, atol=1e-7)
  backbone = model.make_backbone(name=None)
  scaled = backbone.apply({'params': params['backbone']}, 0.01 * tokens.transpose(1, 0, 2))[0]
  np.testing.assert_allclose(scaled, 0.01 * np.asarray(out), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize('name', ['transformer', 'onetrans'])
def test_first_order_path_is_logistic_regression_when_the_head_is_zero(name):
  """first_order=True: logit = head(blocks) + LR(fields); with the head's last layer at zero the
  model is exactly logistic regression with the same weights."""
  from deres_jax.models.logreg import LogisticRegression  # pylint: disable=g-import-not-at-top
  cfg = models.model_config(name)
  with cfg.unlocked():
    cfg.first_order = True
  model = models.build(cfg, SCHEMA)
  batch = _batch()
  params = nn.unbox(model.init(jax.random.PRNGKey(0), batch)['params'])
  r = np.random.default_rng(1)
  fo = jax.tree.map(lambda x: jnp.asarray(r.normal(size=np.shape(x)), jnp.float32), params['first_order'])
  head = jax.tree.map(jnp.zeros_like, params['head'])
  params = dict(params, first_order=fo, head=head)
  lr = LogisticRegression(SCHEMA.vocab_sizes, 2)
  want = lr.apply({'params': fo}, batch)[0]
  np.testing.assert_allclose(model.apply({'params': params}, batch)[0], want, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(want)).max() > 0.1
  assert model.flops_per_example()['first_order'] > 0


def test_zoo_tokenizer_survives_a_model_switch():
  """configs/byo_csv.py's Auto-Split tokens reach any zoo model --config.model.name picks."""
  import os  # pylint: disable=g-import-not-at-top
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def switched(name, *pairs, file='byo_csv.py', **top):
    c = config_lib.load_file(os.path.join(root, 'configs', file))
    with c.unlocked():
      c.update(top)
    return config_lib.validate(config_lib.apply_model_overrides(c, [('name', name), *pairs]))

  for name in ('rankmixer', 'hiformer', 'unimixer', 'tokenmixer_large', 'onetrans'):
    assert switched(name).model.tokenizer == 'autosplit', name
  assert 'tokenizer' not in switched('dnn').model
  assert switched('rankmixer', ('tokenizer', 'group')).model.tokenizer == 'group'   # a flag wins
  assert switched('rankmixer', file='quickstart.py').model.tokenizer == 'group'    # '' = the paper's
  assert switched('rankmixer', zoo_tokenizer='').model.tokenizer == 'group'
  with pytest.raises(config_lib.ConfigError, match='zoo_tokenizer'):
    switched('rankmixer', zoo_tokenizer='groups')
  # The connector likewise: byo_csv's DeRes reaches every zoo model; a flag or '' gives the paper's.
  for name in ('rankmixer', 'hiformer', 'unimixer', 'tokenmixer_large'):
    assert switched(name).model.connector == 'deres', name
  assert switched('unimixer', ('connector', 'siamese')).model.connector == 'siamese'
  assert switched('rankmixer', zoo_connector='').model.connector == 'postnorm'
  assert switched('unimixer', file='quickstart.py').model.connector == 'siamese'
  with pytest.raises(config_lib.ConfigError, match='zoo_connector'):
    switched('rankmixer', zoo_connector='deres2')
