"""The paper forms of three baselines: STAR's partitioned normalisation with per-scenario batch
statistics (carried by the train state and the checkpoint), APG's generated bias and
over-parameterisation, AdaSparse's sparsity regulariser and annealing."""
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import family as ms_family
from deres_jax.multiscenario import models, synthetic
from deres_jax.multiscenario.models import apg, norm
from deres_jax.train import step as step_lib
from deres_jax.train import trainer

VOCAB, S = (11, 7, 5), 3


def _batch(n=64, seed=0, num_scenarios=S):
  rng = np.random.default_rng(seed)
  return {'cat': jnp.asarray(np.stack([rng.integers(0, v, n) for v in VOCAB], 1), jnp.int32),
          'dense': jnp.asarray(rng.normal(size=(n, 2)), jnp.float32),
          'scenario': jnp.asarray(rng.integers(0, num_scenarios, n), jnp.int32),
          'label': jnp.asarray(rng.integers(0, 2, n), jnp.float32)}


def _model(name, **fields):
  cfg = models.model_config(name, embed_dim=4, hidden=(8, 6), **fields)
  models.check(cfg)
  return models.build(cfg, vocab_sizes=VOCAB, num_dense=2, num_scenarios=S)


def _random(tree, seed, scale=0.3):
  leaves, treedef = jax.tree.flatten(tree)   # NumPy draws: no kernel compiled per leaf shape
  rng = np.random.default_rng(seed)
  return jax.tree.unflatten(treedef, [(rng.normal(size=x.shape) * scale).astype(np.float32) for x in leaves])


# ---------------------------------------------------------------- STAR: partitioned normalisation.
class _PN(nn.Module):
  mode: str
  momentum: float = 0.9

  @nn.compact
  def __call__(self, x, ids, known, train):
    return norm.partitioned_norm(self, x, ids, known, train, self.mode, S, self.momentum)


def test_partitioned_norm_uses_each_scenarios_batch_statistics():
  """A hand batch (scenario 2 absent, one row of an unseen scenario) against a NumPy
  transcription of STAR's PN: training output, running-statistics update, evaluation output."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 3)).astype(np.float32) * [1.0, 3.0, 0.5] + [0.0, 2.0, -1.0]
  ids = np.array([0, 0, 1, 1, 1, 0, 0])
  known = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)      # the last row: an unseen scenario
  pn = _PN('batch')
  variables = pn.init(jax.random.PRNGKey(0), x, ids, known, False)
  params = _random(variables['params'], 1)
  params['gamma'] += 1.0
  (y, state) = pn.apply({**variables, 'params': params}, x, ids, known, True,
                        mutable=['batch_stats'])

  slot = np.where(known > 0, ids, S)
  mu, var = np.zeros((S + 1, 3)), np.ones((S + 1, 3))
  present = np.zeros(S + 1, bool)
  for p in range(S + 1):
    rows = x[(slot == p) & (known > 0)] if p < S else x    # slot S: the whole batch
    if len(rows):
      mu[p], var[p], present[p] = rows.mean(0), rows.var(0), True
  g = params['gamma'] * np.where(known[:, None] > 0, params['scenario_gamma'][ids], 1.0)
  b = params['beta'] + np.where(known[:, None] > 0, params['scenario_beta'][ids], 0.0)
  want = g * (x - mu[slot]) / np.sqrt(var[slot] + 1e-5) + b
  np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)

  stats = state['batch_stats']
  want_mean = np.where(present[:, None], 0.9 * 0.0 + 0.1 * mu, 0.0)
  want_var = np.where(present[:, None], 0.9 * 1.0 + 0.1 * var, 1.0)
  np.testing.assert_allclose(stats['mean'], want_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats['var'], want_var, rtol=1e-5, atol=1e-6)
  assert (np.asarray(stats['mean'])[2] == 0).all()           # scenario 2 had no row: untouched

  y_eval = pn.apply({'params': params, **state}, x, ids, known, False)
  m, v = np.asarray(stats['mean'])[slot], np.asarray(stats['var'])[slot]
  np.testing.assert_allclose(y_eval, g * (x - m) / np.sqrt(v + 1e-5) + b, rtol=2e-5, atol=2e-5)


def test_star_batch_norm_needs_its_statistics():
  model = _model('star', partition_norm='batch')
  batch = _batch()
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)   # traced, never run
  assert set(variables['batch_stats']) == {'mean', 'var'}
  with pytest.raises(ValueError, match="apply the model with its variables"):
    jax.eval_shape(lambda p: model.apply({'params': p}, batch), variables['params'])
  with pytest.raises(ValueError, match="mutable=\\['batch_stats'\\]"):
    jax.eval_shape(lambda v: model.apply(v, batch, train=True), variables)
  with pytest.raises(ValueError, match='norm_momentum'):
    _model('star', partition_norm='batch', norm_momentum=1.0)


@pytest.fixture(scope='module')
def syn():
  return synthetic.generate(synthetic.MultiScenarioSpec(num_train=1024, num_val=256, num_test=256))


def _star_config(steps):
  c = config_lib.base_config()
  c.model = models.model_config('star', embed_dim=4, hidden=(8,), partition_norm='batch',
                                aux_hidden=(4,), norm_momentum=0.5)
  c.train.update(batch_size=64, num_steps=steps, log_every=3)
  c.eval.update(every_steps=3, batch_size=256, restore_best=True)
  c.ckpt.update(every_steps=3)
  return c


def _final_state(workdir, step):
  mngr = ocp.CheckpointManager(str(workdir / 'checkpoints'), item_names=('state', 'meta'))
  state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  mngr.close()
  return {k: state[k] for k in ('params', 'model_state')}


def test_star_scenario_statistics_differ_and_resume_exactly(tmp_path, syn):
  """6 steps straight vs 3 steps then a resumed run to 6: the per-scenario running statistics
  (and everything else) are bitwise the same, and they differ between scenarios."""
  straight = trainer.train_and_evaluate(_star_config(6), str(tmp_path / 'a'), dataset=syn)
  trainer.train_and_evaluate(_star_config(3), str(tmp_path / 'b'), dataset=syn)
  resumed = trainer.train_and_evaluate(_star_config(6), str(tmp_path / 'b'), dataset=syn)
  a, b = _final_state(tmp_path / 'a', 6), _final_state(tmp_path / 'b', 6)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert straight['test'] == resumed['test'] and straight['best_step'] == resumed['best_step']
  mean = np.asarray(a['model_state']['batch_stats']['mean'])      # [S + 1, d]
  assert mean.shape[0] == syn.schema.num_scenarios + 1
  for p in range(syn.schema.num_scenarios):
    for q in range(p):
      assert np.abs(mean[p] - mean[q]).max() > 1e-3, (p, q)
  assert np.isfinite(straight['test']['wauc'])


# ---------------------------------------------------------------- APG.
def test_apg_merged_inference_weights_give_the_training_logits():
  """U = U_l U_r, V = V_l V_r merged into the overparam=0 model: the same logits."""
  model = _model('apg', rank=4, overparam=12)
  batch = dict(_batch(), scenario=jnp.asarray(np.arange(64) % (S + 1), jnp.int32))  # unseen too
  params = _random(flax.linen.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)), 2)
  train_logits, _ = jax.jit(model.apply)(params, batch)
  served, merged = model.for_inference(params['params'])
  assert served.overparam == 0 and 'u_l_0' not in merged and merged['u_0'].shape == (20, 4)
  np.testing.assert_allclose(jax.jit(served.apply)({'params': merged}, batch)[0], train_logits,
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='overparam=3 must be 0'):
    _model('apg', rank=4, overparam=3)


class _Layer(nn.Module):
  overparam: int = 0

  @nn.compact
  def __call__(self, h, h_z, known):
    return apg.apg_layer(self, 0, h, h_z, known, 5, 3, self.overparam, True, jnp.float32)


def test_apg_layer_is_low_rank_core_plus_generated_bias():
  """((h U)(I + C(h_z))) V + b + B(h_z), with the generated parts off for an unseen row."""
  rng = np.random.default_rng(3)
  h, h_z = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)
  known = np.array([1, 1, 1, 0], np.float32)
  layer = _Layer()
  p0 = jax.jit(layer.init)(jax.random.PRNGKey(0), h, h_z, known)['params']
  p = _random(p0, 4)
  apply = jax.jit(layer.apply)
  out = apply({'params': p}, h, h_z, known)
  core = (h_z @ p['scenario_core_0']['kernel'] + p['scenario_core_0']['bias']).reshape(4, 3, 3)
  core = np.eye(3) + core * known[:, None, None]
  gen_b = (h_z @ p['scenario_bias_gen_0']['kernel'] + p['scenario_bias_gen_0']['bias'])
  want = (np.einsum('bk,bkm->bm', h @ p['u_0'], core) @ p['v_0'] + p['bias_0'] +
          gen_b * known[:, None])
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  # Generators at their zero initialisation: every scenario starts at the shared U V and b.
  np.testing.assert_allclose(apply({'params': p0}, h, h_z, known),
                             h @ p0['u_0'] @ p0['v_0'] + p0['bias_0'], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- AdaSparse.
def _train(weight, steps=25):
  """(first, last) (total loss, metrics) of `steps` Adam steps of the CTR loss on one batch."""
  model = _model('adasparse', sparsity_weight=weight, sparsity_range=(0.9, 1.0), anneal_steps=100)
  batch = _batch(seed=5)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)['params']
  loss_fn = step_lib.ctr_loss(model)
  tx = optax.adam(0.01)

  @jax.jit
  def step(params, opt, t):
    (loss, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch, jax.random.PRNGKey(0), t)
    updates, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, updates), opt, (loss, metrics)

  opt, out = tx.init(params), []
  for t in range(steps):
    params, opt, m = step(params, opt, t)
    out.append(m)
  return out[0], out[-1]


def test_adasparse_regulariser_is_in_the_loss_and_lowers_the_factors():
  """λ Σ_l mean(π_l / β) (every layer below r_min = 0.9) is in the loss, and training with it
  ends with smaller pruning factors than training without it."""
  _, (_, off) = _train(0.0)
  (loss0, first), (_, on) = _train(0.5)
  assert 'train/loss/sparsity' not in off and 'train/loss/sparsity' in on
  np.testing.assert_allclose(float(first['train/loss/sparsity']),
                             0.5 * 2 * float(first['train/adasparse/factor_mean']), rtol=1e-5)
  np.testing.assert_allclose(float(loss0), float(first['train/loss'] + first['train/loss/sparsity']),
                             rtol=1e-6)
  assert float(on['train/adasparse/factor_mean']) < float(off['train/adasparse/factor_mean']) - 0.1


def test_adasparse_annealing_spans_the_run(syn):
  """α goes from 1 to alpha_max over the run's steps (set by the family): the 'fusion'
  factors of the same pruner outputs move from soft to nearly binary."""
  c = config_lib.base_config()
  c.model = models.model_config('adasparse', embed_dim=4, hidden=(8,), alpha_max=10.0)
  c.train.update(batch_size=64, num_steps=50)
  model = ms_family.build_model(c, syn)
  assert model.anneal_steps == 50
  assert float(model.alpha(0)) == 1.0 and float(model.alpha(25)) == 5.5
  assert float(model.alpha(50)) == float(model.alpha(80)) == 10.0
  v = jnp.asarray(np.random.default_rng(0).normal(size=4096), jnp.float32)
  soft = lambda pi: float(((pi > 0.05 * model.beta) & (pi < 0.95 * model.beta)).mean())
  assert soft(model.factors(v, model.alpha(0))) > 0.95 > 0.4 > soft(model.factors(v, model.alpha(50)))
