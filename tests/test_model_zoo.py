"""Every model of the zoo: per-model config, training on 1 and 8 devices, FLOPs, errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from deres_jax import config as config_lib
from deres_jax import data as data_lib
from deres_jax import models
from deres_jax.data import iterator
from deres_jax.data.schema import Schema
from deres_jax.models import backbone
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models import onetrans
from deres_jax.train import optim
from deres_jax.train import step as step_lib
from deres_jax.train import trainer

# Tiny sizes per model (shared fields carry over from the tiny Transformer by models.switch).
TINY_TRANSFORMER = dict(depth=2, width=16, num_heads=2, embed_dim=8, ffn_mult=2, head_hidden=(16,),
                        tokenizer='group', num_tokens=4, block_size=2)
TINY = {
    'dcnv2': dict(num_cross=2, dnn_hidden=(32, 32)),
    'dnn': dict(hidden=(32, 32)),
    'wukong': dict(num_layers=2, num_fmb=4, num_lcb=4, rank=4, fmb_hidden=(32,), head_hidden=(32,)),
    'finalnet': dict(block1_hidden=(32, 32), block2_hidden=(32,)),
    'onetrans': dict(pyramid_tokens=2, connector='deres'),
    'rankmixer': dict(num_tokens=4, num_heads=0),
    'tokenmixer_large': dict(num_tokens=4, num_heads=0),
    'unimixer': dict(num_tokens=4),
    'hiformer': dict(low_rank=8),
}


def tiny_model_config(name):
  cfg = models.switch(models.model_config('transformer', **TINY_TRANSFORMER), name)
  for k, v in TINY.get(name, {}).items():
    if k in cfg:  # a model's field names are its own; skip sizes a model does not have
      cfg[k] = v
  return cfg


@pytest.fixture(scope='module')
def tiny_data():
  """Synthetic rows cut to 3 dense and 6 categorical fields (fast compiles, same code paths)."""
  c = config_lib.base_config()
  c.data.update(num_train=2048, num_val=256, num_test=256, max_vocab=200)
  ds = data_lib.load(c.data)
  schema = Schema(dense_names=ds.schema.dense_names[:3], cat_names=ds.schema.cat_names[:6],
                  vocab_sizes=ds.schema.vocab_sizes[:6])
  splits = {k: dict(v, dense=v['dense'][:, :3], cat=v['cat'][:, :6]) for k, v in ds.splits.items()}
  return data_lib.Dataset(schema, splits, ds.source)


def _batch(ds, n=256):
  return {k: v[:n] for k, v in ds.splits['train'].items() if k in iterator.TRAIN_COLUMNS}


def _losses(model, ds, devices, steps, init=None):
  """Losses of `steps` Adam steps on a mesh over `devices`; returns (losses, initial state).

  `init` (a host copy of an initial state) is placed replicated on the new mesh instead of
  initialising again: the same starting point, and one init compile per model.
  """
  c = config_lib.base_config()
  c.optim.learning_rate = c.optim.embed_learning_rate = 3e-3
  mesh = trainer.make_mesh((('data', -1), ('model', 1)), devices)
  tx = optim.make_optimizer(c.optim, steps)
  if init is None:
    state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, _batch(ds, 2), 0)
    init = jax.device_get(state)
  else:
    shardings = jax.tree.map(lambda _: NamedSharding(mesh, P()), init)
    state = jax.device_put(init, shardings)
  train_step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  it = iterator.BatchIterator(ds.splits['train'], 256, seed=0)
  sharding = NamedSharding(mesh, P('data'))
  out = []
  for _ in range(steps):
    state, m = train_step(state, iterator.to_global(next(it), sharding))
    out.append(float(m['train/loss']))
  return np.array(out), init


# 1 vs 8 devices for the models whose layers differ most in what a data-parallel step
# shards (token-specific weights, pyramid, aux loss, cross layers); the others only train on
# 8 devices with a falling loss (the suite's time budget: each mesh is one more compile).
COMPARED = ('transformer', 'onetrans', 'tokenmixer_large', 'dcnv2')


@pytest.mark.parametrize('name', [n for n in models.MODELS if n not in COMPARED])
def test_model_trains_on_8_devices(name, tiny_data):
  model = models.build(tiny_model_config(name), tiny_data.schema)
  eight, _ = _losses(model, tiny_data, jax.devices(), 30)
  assert np.isfinite(eight).all() and eight[-5:].mean() < eight[:5].mean(), eight  # the loss falls


@pytest.mark.parametrize('name', COMPARED)
def test_model_trains_the_same_on_1_and_8_devices(name, tiny_data):
  model = models.build(tiny_model_config(name), tiny_data.schema)
  one, init = _losses(model, tiny_data, jax.devices()[:1], 30)
  eight, _ = _losses(model, tiny_data, jax.devices(), 30, init)
  assert one[-5:].mean() < one[:5].mean(), one  # the loss falls
  # The same losses: to 1e-5 over the first 10 steps; later, Adam's normalisation of tiny
  # gradients amplifies the rounding of sums taken in another order over 8 shards.
  np.testing.assert_allclose(eight[:10], one[:10], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(eight, one, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize('name', list(models.MODELS))
def test_analytic_flops_agree_with_xla(name, tiny_data):
  # Width 64 rather than the tiny 16: the analytic counts leave elementwise work (norms, GELU)
  # out, which is a large share of the work only for very narrow tokens.
  small = tiny_model_config(name)
  if 'width' in small:
    small.width = 64
  # (Each model's own test file also checks its defaults at their full size.)
  for cfg in (small,):
    model = models.build(cfg, tiny_data.schema)
    batch = _batch(tiny_data, 256)
    variables = model.init(jax.random.PRNGKey(0), batch)
    analytic = model.flops_per_example()
    xla = flops_lib.xla_flops_per_example(model, variables, batch)
    assert analytic['total'] == sum(v for k, v in analytic.items() if k != 'total')
    assert 0.75 * xla <= analytic['total'] <= 1.25 * xla, (dict(cfg), analytic, xla)


@pytest.mark.parametrize('name', list(models.MODELS))
def test_config_section_is_the_models_own_fields(name):
  fields = models.fields(name)
  cfg = models.model_config(name)
  assert set(cfg) == {'name'} | set(fields)
  for key, (default, comment) in fields.items():
    assert cfg[key] == default
    assert comment, f'{name}.{key} has no comment for users'
  config_lib.validate_model(cfg)  # the defaults are valid
  for key, allowed in models.choices(name).items():
    assert fields[key][0] in allowed, (name, key)


def test_unknown_field_and_unknown_model_give_one_sentence():
  c = config_lib.base_config()
  c.model = models.model_config('dcnv2')
  with c.model.unlocked():
    c.model.width = 64
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  msg = str(e.value)
  assert "model 'dcnv2' has no field 'width'" in msg and 'num_cross' in msg and '\n' not in msg
  with pytest.raises(config_lib.ConfigError, match=r"'nope' is not a model; choose one of"):
    config_lib.apply_model_overrides(config_lib.base_config(), [('name', 'nope')])
  with pytest.raises(config_lib.ConfigError, match=r"model 'transformer' has no field 'num_cross'"):
    config_lib.apply_model_overrides(config_lib.base_config(), [('num_cross', '3')])
  # PreNorm has the Transformer's fields, so merge is accepted there: it is a Transformer field.
  c = config_lib.apply_model_overrides(config_lib.base_config(),
                                       [('name', 'dcnv2'), ('num_cross', '4'),
                                        ('dnn_hidden', '(8,8)')])
  assert c.model.num_cross == 4 and c.model.dnn_hidden == (8, 8) and 'width' not in c.model
  assert c.model.embed_dim == config_lib.base_config().model.embed_dim  # shared fields carry


def test_switch_keeps_shared_fields_and_drops_the_rest():
  cfg = models.model_config('transformer', depth=3, width=48, embed_dim=12, connector='attnres',
                            tokenizer='group')
  ot = models.switch(cfg, 'onetrans')
  assert (ot.depth, ot.width, ot.embed_dim) == (3, 48, 12)  # sizes carry
  # Fields whose defaults differ make OneTrans OneTrans: they take its own defaults.
  assert (ot.connector, ot.tokenizer) == ('prenorm', 'autosplit')
  lr = models.switch(cfg, 'logreg')
  assert set(lr) == {'name', 'dense_transform'}
  # A shared value the new model refuses (RankMixer needs H = T) is not carried over.
  rm = models.switch(models.model_config('transformer', num_heads=4, num_tokens=8), 'rankmixer')
  assert rm.num_heads == models.fields('rankmixer')['num_heads'][0] and rm.num_tokens == 8
  config_lib.validate_model(rm)


def test_pyramid_keeps_the_last_tokens():
  """One block whose queries are only the last k tokens equals the last k rows of the full block.

  Keys and values come from all tokens either way, so only the rows of the dropped tokens
  differ; token-specific weights of the kept tokens are the full model's last k slices.
  """
  t, d, k = 6, 16, 2
  x = jax.random.normal(jax.random.PRNGKey(0), (t, 5, d))
  for conn in ('deres',):  # DeRes: the stream and every depth source are truncated
    kw = dict(mixer=layers.SelfAttention, mixer_kw=dict(num_heads=2), ffn=layers.FeedForward,
              ffn_kw=dict(mult=2), depth=1, connector=conn, block_size=1)
    full = backbone.Backbone(**kw)
    pyr = backbone.Backbone(keep_tokens=(k,), **kw)
    p = nn.unbox(full.init(jax.random.PRNGKey(1), x)['params'])
    p = jax.tree_util.tree_map_with_path(  # live depth weights
        lambda path, v: v + 0.3 if getattr(path[-1], 'key', '') in ('query', 'gate') else v, p)
    shapes = jax.tree.map(lambda v: v.shape, nn.unbox(pyr.init(jax.random.PRNGKey(1), x)['params']))

    def cut(v, shape):  # token-specific parameters: keep the last k tokens' slices
      return v[-shape[0]:] if v.shape != shape else v
    pp = jax.tree.map(cut, p, shapes, is_leaf=lambda v: isinstance(v, jax.Array))
    out_full, _ = full.apply({'params': p}, x)
    out_pyr, hidden = pyr.apply({'params': pp}, x)
    assert out_pyr.shape[0] == k and hidden[0].shape[0] == k
    np.testing.assert_allclose(np.asarray(out_pyr), np.asarray(out_full[-k:]), rtol=1e-5, atol=1e-5)


def test_pyramid_schedule_is_linear_to_the_final_count():
  assert onetrans.pyramid_schedule(12, 4, 4) == (10, 8, 6, 4)
  assert onetrans.pyramid_schedule(8, 0, 3) == ()
  with pytest.raises(config_lib.ConfigError, match='scan_layers=False'):
    config_lib.validate_model(models.model_config('onetrans', pyramid_tokens=2, scan_layers=True))


def test_aux_losses_are_added_and_logged(tiny_data):
  """A model's aux['losses'] enter the loss and the metrics as train/loss/<name>."""

  class WithAux(nn.Module):
    inner: nn.Module

    def __call__(self, batch, train=False):
      logits, aux = self.inner(batch, train)
      return logits, dict(aux, losses={'const': jnp.float32(0.25)})

    def flops_per_example(self):
      return self.inner.flops_per_example()

  base = models.build(tiny_model_config('logreg'), tiny_data.schema)
  c = config_lib.base_config()
  mesh = trainer.make_mesh((('data', -1), ('model', 1)), jax.devices())
  tx = optim.make_optimizer(c.optim, 10)
  model = WithAux(base)
  state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, _batch(tiny_data, 2), 0)
  train_step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  _, m = train_step(state, iterator.to_global(_batch(tiny_data), sharding))
  assert float(m['train/loss/const']) == 0.25
  np.testing.assert_allclose(float(m['train/total_loss']), float(m['train/loss']) + 0.25, rtol=1e-6)


def test_train_py_switches_model_by_name(tmp_path):
  """--config.model.name=<m> plus that model's own field trains from the command line."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS=os.environ.get('DERES_TEST_XLA_FLAGS', ''), JAX_PLATFORMS='cpu')
  cmd = [sys.executable, os.path.join(root, 'launch', 'train.py'),
         f'--config={os.path.join(root, "configs", "tiny.py")}', f'--workdir={tmp_path}',
         '--config.model.name=dcnv2', '--config.model.num_cross=1',
         '--config.model.dnn_hidden=(16,)', '--config.train.num_steps=4',
         '--config.eval.every_steps=4']
  run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(tmp_path / 'summary.json') as f:
    summary = json.load(f)
  with open(tmp_path / 'config.json') as f:
    saved = json.load(f)
  assert summary['model'] == 'dcnv2' and saved['model']['num_cross'] == 1
  assert 'width' not in saved['model']  # the Transformer's fields are gone
  assert summary['flops_per_example'] > 0 and summary['embedding_params'] > 0
