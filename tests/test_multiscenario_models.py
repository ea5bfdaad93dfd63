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
  """Random N(0, scale²) values for every parameter (shapes from init, never run eagerly).

  NumPy draws them: an eager jax.random.normal per leaf compiles one kernel per shape (7 s here).
  """
  shapes = flax.linen.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch))
  leaves, tree = jax.tree.flatten(shapes)
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(tree, [jnp.asarray(rng.normal(size=l.shape) * scale, jnp.float32) for l in leaves])


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


def _grads(model, params, batch):
  """Gradients of sum(logits) + MI with respect to every parameter."""
  def f(p):
    logits, aux = model.apply(p, batch)
    return logits.sum() + aux['mi']
  return jax.jit(jax.grad(f))(params)


@pytest.mark.parametrize('form', ['elementwise', 'core', 'product'])
def test_midpg_per_scenario_equals_per_example(form):
  """The per-scenario form (each scenario's W_s once per step) and the per-example factored
  form: the same logits, MI and gradients (unseen rows included); materialised: the logits."""
  batch = _batch()
  batch['scenario'] = batch['scenario'].at[:3].set(S)  # unseen rows take the shared path
  mods = {c: _model('midpg', form=form, compute=c)
          for c in ('factored', 'per_scenario', 'materialised')}
  params = _params(mods['factored'], batch)
  ref_l, ref_a = jax.jit(mods['factored'].apply)(params, batch)
  assert abs(float(ref_a['mi'])) > 1e-3  # random factors: the weightings differ, MI is not 0
  logits, aux = jax.jit(mods['per_scenario'].apply)(params, batch)
  np.testing.assert_allclose(logits, ref_l, rtol=1e-4, atol=1e-4)
  assert float(aux['mi']) == pytest.approx(float(ref_a['mi']), abs=1e-4)
  for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(_grads(mods['per_scenario'], params, batch)),
                          jax.tree.leaves(_grads(mods['factored'], params, batch))):
    np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4, err_msg=str(path))
  np.testing.assert_allclose(jax.jit(mods['materialised'].apply)(params, batch)[0], ref_l,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('form', ['elementwise', 'core', 'product'])
def test_midpg_per_example_context_factored_equals_materialised(form):
  batch = _batch()
  fact, mat = (_model('midpg', form=form, context='features', compute=c)
               for c in ('factored', 'materialised'))
  params = _params(fact, batch)
  lf, af = jax.jit(fact.apply)(params, batch)
  lm, am = jax.jit(mat.apply)(params, batch)
  np.testing.assert_allclose(lf, lm, rtol=1e-4, atol=1e-4)
  assert float(af['mi']) == pytest.approx(float(am['mi']), abs=1e-4)


def test_midpg_gradients_are_finite_at_init_with_unseen_rows():
  """Regression: an unseen row's z is 0 and the critic's bias starts at 0, so phi = 0; a
  cosine critic normalising by |phi| + ε had a NaN gradient there (the training stopped at
  step 1 with data.shared_path_fraction > 0)."""
  model = _model('midpg')
  batch = _batch()
  batch['scenario'] = batch['scenario'].at[:4].set(S)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)
  grads = _grads(model, params, batch)
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_per_scenario_needs_a_scenario_only_weighting():
  with pytest.raises(ValueError, match="needs context='none'"):
    _model('midpg', context='features', compute='per_scenario')


def test_mi_is_zero_when_weightings_are_equal_and_rises_when_they_differ():
  """At initialisation every scenario's realised weighting W ⊙ M_s is the same (B(z) = 0):
  each estimator is <= 0.05 nats even with its critic fitted to maximise it, and with noise.
  With B(z) made non-zero the weightings differ and the fitted critic finds the MI."""
  import optax  # pylint: disable=g-import-not-at-top
  model = _model('midpg')
  batch = _batch(128)
  ids = batch['scenario']
  init = jax.jit(model.init)(jax.random.PRNGKey(0), batch)
  noisy = model.apply(init, batch, train=True, rngs={'dropout': jax.random.PRNGKey(1)})[1]['mi']
  assert float(noisy) <= 0.05
  tx = optax.adam(0.05)

  def estimates(critic, params):  # [3]: every estimator from the same critic scores
    scores = model.apply({'params': dict(params['params'], **critic)}, batch)[1]['mi_scores']
    return jnp.stack([mi.estimate(scores, e, ids) for e in mi.ESTIMATORS])

  @jax.jit
  def fit(params, which):  # maximise estimator `which` over the critic's heads only
    def step(carry, _):
      c, opt = carry
      g = jax.grad(lambda c: -estimates(c, params) @ which)(c)
      upd, opt = tx.update(g, opt)
      return (optax.apply_updates(c, upd), opt), None
    critic = {k: v for k, v in params['params'].items() if k.startswith('scenario_critic')}
    (critic, _), _ = jax.lax.scan(step, (critic, tx.init(critic)), None, length=60)
    return estimates(critic, params) @ which

  differ = flax.traverse_util.flatten_dict(init)
  for i, k in enumerate(sorted(differ)):
    if 'scenario_b' in k:  # the generated B(z): the scenarios' weightings now differ
      differ[k] = 0.5 * jax.random.normal(jax.random.PRNGKey(i), differ[k].shape)
  differ = flax.traverse_util.unflatten_dict(differ)
  # The value of the optimal critic T = log p(m|z)/p(m) for S equiprobable distinct weightings.
  ceiling = {'infonce': np.log(S), 'dv': np.log(S),
             'jsd': np.log(2) - np.log1p(1 / S) / 2 - np.log1p(S) / (2 * S)}
  for k, e in enumerate(mi.ESTIMATORS):
    which = jnp.eye(len(mi.ESTIMATORS))[k]
    assert float(fit(init, which)) <= 0.05, e
    assert 0.4 * ceiling[e] < float(fit(differ, which)) <= ceiling[e] + 0.05, e


@pytest.mark.parametrize('estimator', mi.ESTIMATORS)
def test_bounds_never_exceed_their_ceilings_on_random_critics(estimator):
  """InfoNCE <= log C, DV <= H(S) of the prior (= the batch's scenario frequencies), JSD <= log 2,
  for random critics at any scale."""
  rng = np.random.default_rng(0)
  worst = -np.inf
  for trial in range(30):
    c = int(rng.integers(2, 6))
    ids = rng.integers(0, c, 64)
    ids[:c] = np.arange(c)  # every scenario present: the prior has no zero
    prior = np.bincount(ids, minlength=c) / 64
    ceiling = {'infonce': np.log(c), 'dv': -np.mean(np.log(prior[ids])), 'jsd': np.log(2)}[estimator]
    scale = 10.0 ** rng.uniform(-1, 2)
    scores = scale * rng.normal(size=(64, c))
    scores[np.arange(64), ids] += scale * rng.uniform(0, 5)  # critics that favour the positive
    est = float(mi.estimate(jnp.asarray(scores), estimator, jnp.asarray(ids), prior=prior))
    worst = max(worst, est - ceiling)
  assert worst <= 1e-5, worst


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
  """[B, S] scores with the own scenario as positive: the optimal critic log p(m|z)/p(m)
  (log S on the positive, very low elsewhere) reaches the ceiling (log S; JSD ~0.38 nats at S = 4),
  a blind critic stays near or below 0; rows with weight 0 (unseen scenarios) do not count."""
  rng = np.random.default_rng(1)
  ids = jnp.asarray(rng.integers(0, 4, 512))
  informative = jnp.where(jax.nn.one_hot(ids, 4) > 0, np.log(4), -12.0)
  blind = jnp.asarray(rng.normal(size=(512, 4)), jnp.float32)
  dep, indep = (float(mi.estimate(t, estimator, positive=ids)) for t in (informative, blind))
  assert dep > indep + 0.3 and indep < 0.1, (dep, indep)
  if estimator != 'jsd':
    assert dep == pytest.approx(np.log(4), abs=1e-4)
  w = jnp.asarray(np.r_[np.ones(256), np.zeros(256)], jnp.float32)
  half = float(mi.estimate(informative, estimator, positive=ids, weights=w))
  full = float(mi.estimate(informative[:256], estimator, positive=ids[:256]))
  assert half == pytest.approx(full / 2, rel=1e-5)  # mean over all rows, weight-0 rows add 0
