"""Recipe fields from the quality work: embed_cross (DCNv2 cross before tokens) and ffn_act."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deres_jax import models
from deres_jax.data.schema import Schema
from deres_jax.models import flops as flops_lib

SCHEMA = Schema(dense_names=('I1', 'I2'), cat_names=('C1', 'C2', 'C3'), vocab_sizes=(5, 7, 3))


def _batch(n=8):
  rng = np.random.default_rng(0)
  return {'cat': rng.integers(0, 3, (n, 3)).astype(np.int32),
          'dense': rng.normal(size=(n, 2)).astype(np.float32)}


def _cfg(**kw):
  cfg = models.model_config('transformer')
  cfg.update(dict(dict(width=8, num_heads=2, embed_dim=4, head_hidden=(8,), tokenizer='group', num_tokens=2),
                  **kw))
  return cfg


def test_embed_cross_is_the_dcnv2_recursion():
  """With cross weights W=0, b=1 each layer doubles x (x0*1 + x); with W=0, b=0 it is the identity."""
  batch = _batch()
  plain = models.build(_cfg(), SCHEMA)
  cross = models.build(_cfg(embed_cross=2), SCHEMA)
  params = nn.unbox(cross.init(jax.random.PRNGKey(0), batch)['params'])
  tok = params['tokenizer']
  zero = {k: (jax.tree.map(jnp.zeros_like, v) if k.startswith('cross_') else v) for k, v in tok.items()}
  base_params = dict(params, tokenizer={k: v for k, v in tok.items() if not k.startswith('cross_')})
  out_plain = plain.apply({'params': base_params}, batch)[0]
  out_zero = cross.apply({'params': dict(params, tokenizer=zero)}, batch)[0]
  np.testing.assert_allclose(out_zero, out_plain, rtol=1e-6, atol=1e-6)
  # x1 = x0 * (0 x0 + 1) + x0 = 2 x0, x2 = x0 * 1 + 2 x0 = 3 x0: tokens of 3 x0.
  ones = {k: ({'kernel': jnp.zeros_like(v['kernel']), 'bias': jnp.ones_like(v['bias'])}
              if k.startswith('cross_') else v) for k, v in tok.items()}
  emb3 = cross.make_tokenizer(name=None).apply({'params': ones}, batch)[0]
  scaled = {k: v for k, v in tok.items() if not k.startswith('cross_')}
  scaled = dict(scaled, embedding=3 * scaled['embedding'], dense_scale=3 * scaled['dense_scale'],
                dense_bias=3 * scaled['dense_bias'], dense_missing=3 * scaled['dense_missing'])
  emb_ref = plain.make_tokenizer(name=None).apply({'params': scaled}, batch)[0]
  np.testing.assert_allclose(emb3, emb_ref, rtol=1e-5, atol=1e-6)


def test_flops_of_the_recipe_fields_match_xla():
  batch = _batch(16)
  for kw in ({'embed_cross': 2}, {'ffn_act': 'swiglu'}):
    model = models.build(_cfg(width=64, num_heads=4, **kw), SCHEMA)
    params = model.init(jax.random.PRNGKey(0), batch)
    want = model.flops_per_example()['total']
    got = flops_lib.xla_flops_per_example(model, params, batch)
    assert abs(got - want) / want < 0.25, (kw, got, want)
