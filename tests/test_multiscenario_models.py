"""Multi-scenario models: MI-DPG's reductions and factored forms, InfoNCE, STAR, PEPNet, unseen ids."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.models.tokenizer import FeatureTokenizer
from deres_jax.multiscenario import mi
from deres_jax.multiscenario import models

VOCAB, S = (11, 7, 5), 3


def _batch(n=32, seed=0, scenario=None):
  rng = np.random.default_rng(seed)
  sc = rng.integers(0, S, n) if scenario is None else np.full(n, scenario)
  return {'cat': jnp.asarray(np.stack([rng.integers(0, v, n) for v in VOCAB], 1), jnp.int32),
          'dense': jnp.asarray(rng.normal(size=(n, 2)), jnp.float32),
          'scenario': jnp.asarray(sc, jnp.int32), 'label': jnp.zeros(n)}


def _params(model, batch, seed=1, scale=0.3):
  """Random N(0, scale²) values for every parameter (shapes from init, never run eagerly)."""
  shapes = flax.linen.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
  leaves, tree = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.normal(k, l.shape) * scale for k, l in zip(keys, leaves)])


def _model(name, **fields):
  cfg = models.model_config(name, embed_dim=4, hidden=(8, 6), **fields)
  models.check(cfg)
  return models.build(cfg, vocab_sizes=VOCAB, num_dense=2, num_scenarios=S)


def _zero_specific(params):
  """MI-DPG parameters with every scenario-specific factor and bias set to zero."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict(
      {k: (jnp.zeros_like(v) if any(p in ('scenario_b', 'scenario_core') or p.startswith('scenario_bias')
                                    for p in k) else v) for k, v in flat.items()})


@pytest.mark.parametrize('form', ['elementwise', 'core'])
def test_midpg_with_zero_specific_factors_is_the_shared_model(form):
  model = _model('midpg', form=form)
  batch = _batch()
  params = _zero_specific(_params(model, batch))
  apply = jax.jit(model.apply)
  logits, _ = apply(params, batch)
  # The same for every scenario, and for a scenario never seen (the shared path)...
  for s in (0, 2, S, 99, -1):
    np.testing.assert_array_equal(apply(params, dict(batch, scenario=jnp.full(32, s)))[0],
                                  logits)
  # ... and equal to the plain MLP with weights W ⊙ (1 + A_sh^T B_sh), computed by hand.
  p = params['params']
  emb = p['tokenizer']
  x = jnp.asarray(batch['dense'])
  x = jnp.sign(x) * jnp.log1p(jnp.abs(x))
  dense = x[..., None] * emb['dense_scale'] + emb['dense_bias']
  offsets = np.concatenate([[0], np.cumsum(VOCAB)[:-1]])
  cat = emb['embedding'][batch['cat'] + offsets]
  h = jnp.concatenate([dense, cat], 1).reshape(32, -1)
  for i in range(3):
    layer = p[f'layer_{i}']
    w = layer['kernel'] * (1 + layer['shared_a'].T @ layer['shared_b'])
    h = h @ w + layer['bias']
    h = h if i == 2 else jax.nn.relu(h)
  np.testing.assert_allclose(logits, h[:, 0], rtol=1e-5, atol=1e-5)


def test_midpg_specific_factors_make_scenarios_differ():
  """The converse: non-zero specific factors make scenarios differ (else the test above is empty)."""
  model = _model('midpg')
  batch = _batch()
  params = _params(model, batch)
  apply = jax.jit(model.apply)
  a = apply(params, dict(batch, scenario=jnp.zeros(32, jnp.int32)))[0]
  b = apply(params, dict(batch, scenario=jnp.ones(32, jnp.int32)))[0]
  assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize('form', ['elementwise', 'core', 'product'])
@pytest.mark.parametrize('context', ['none', 'features'])
def test_midpg_factored_equals_materialised_weights(form, context):
  batch = _batch()
  fact, mat = (_model('midpg', form=form, context=context, compute=c)
               for c in ('factored', 'materialised'))
  params = _params(fact, batch)
  lf, af = jax.jit(fact.apply)(params, batch)
  lm, am = jax.jit(mat.apply)(params, batch)
  np.testing.assert_allclose(lf, lm, rtol=1e-4, atol=1e-4)
  assert float(af['losses']['mi']) == pytest.approx(float(am['losses']['mi']), abs=1e-5)


@pytest.mark.parametrize('estimator', mi.ESTIMATORS)
def test_mi_estimate_higher_for_dependent_pairs(estimator):
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=(256, 8)), jnp.float32)
  dependent = z + 0.3 * jnp.asarray(rng.normal(size=(256, 8)), jnp.float32)
  independent = jnp.asarray(rng.normal(size=(256, 8)), jnp.float32)
  est = {k: float(mi.estimate(mi.critic_scores(z, m, 0.2), estimator))
         for k, m in (('dep', dependent), ('indep', independent))}
  assert est['dep'] > est['indep'] + 0.5, est
  if estimator == 'infonce':  # InfoNCE can never exceed log B
    assert est['dep'] <= np.log(256) + 1e-5


def test_star_weights_are_the_elementwise_product():
  model = _model('star', partition_norm='none', aux_net=False)
  batch = _batch()
  params = _params(model, batch)
  p = params['params']
  logits, _ = jax.jit(model.apply)(params, batch)
  h0 = FeatureTokenizer(VOCAB, 2, 4, 4).apply({'params': p['tokenizer']}, batch)[0].reshape(32, -1)
  for row in range(4):
    s = int(batch['scenario'][row])
    h = h0[row]
    for i in range(3):
      h = h @ (p[f'kernel_{i}'] * p[f'scenario_kernel_{i}'][s]) + p[f'bias_{i}'] + p[f'scenario_bias_{i}'][s]
      h = h if i == 2 else jax.nn.relu(h)
    np.testing.assert_allclose(logits[row], h[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('gamma', [2.0, 3.0])
def test_pepnet_gates_lie_in_zero_gamma(gamma):
  model = _model('pepnet', gamma=gamma)
  batch = _batch(256)
  params = _params(model, batch, scale=0.2)
  _, aux = jax.jit(model.apply)(params, batch)
  gates = np.concatenate([np.asarray(g).ravel() for g in aux['gates']])
  assert len(aux['gates']) == 4  # EPNet + one PPNet gate per layer (2 hidden + logit)
  assert gates.min() > 0 and gates.max() < gamma
  assert gates.max() > 0.7 * gamma and gates.min() < 0.3 * gamma  # the range is really used


@pytest.mark.parametrize('name', list(models.MODELS))
def test_unseen_scenario_ids_take_the_shared_path(name):
  model = _model(name)
  batch = _batch()
  params = _params(model, batch)
  apply = jax.jit(model.apply)
  out = {s: np.asarray(apply(params, dict(batch, scenario=jnp.full(32, s)))[0])
         for s in (S, 99, -1)}
  assert all(np.isfinite(o).all() for o in out.values())
  np.testing.assert_array_equal(out[S], out[99])   # every unseen id is treated the same
  np.testing.assert_array_equal(out[S], out[-1])
  counts = models.param_counts(params['params'])
  assert counts['scenario'] > 0 and counts['shared'] > 0
  assert counts['total'] == sum(int(x.size) for x in jax.tree.leaves(params))


@pytest.mark.parametrize('estimator', mi.ESTIMATORS)
def test_mi_over_scenario_candidates(estimator):
  """[B, S] scores with the own scenario as positive (MI-DPG's default negatives): a critic
  that tells the scenarios apart beats one that cannot; InfoNCE stays within log S; rows
  with weight 0 (unseen scenarios) do not count."""
  rng = np.random.default_rng(1)
  ids = jnp.asarray(rng.integers(0, 4, 512))
  informative = jax.nn.one_hot(ids, 4) * 5.0 + jnp.asarray(rng.normal(size=(512, 4)), jnp.float32)
  blind = jnp.asarray(rng.normal(size=(512, 4)), jnp.float32)
  dep, indep = (float(mi.estimate(t, estimator, positive=ids)) for t in (informative, blind))
  assert dep > indep + 0.5, (dep, indep)
  if estimator == 'infonce':
    assert 0.9 * np.log(4) < dep <= np.log(4) + 1e-6 and indep < 0.2
  w = jnp.asarray(np.r_[np.ones(256), np.zeros(256)], jnp.float32)
  half = float(mi.estimate(informative, estimator, positive=ids, weights=w))
  full = float(mi.estimate(informative[:256], estimator, positive=ids[:256]))
  assert half == pytest.approx(full / 2, rel=1e-5)  # mean over all rows, weight-0 rows add 0
