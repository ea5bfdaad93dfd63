"""OneTrans with S-tokens: causal mask, pyramid, mixed weights, every connector, FLOPs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax import models
from deres_jax.data.schema import Schema
from deres_jax.models import backbone
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models import mixed_tokens

SCHEMA = Schema(cat_names=('user', 'item', 'cate'), vocab_sizes=(5, 9, 4), seq_names=('hist', 'hcat'),
                seq_vocab_sizes=(9, 4), seq_shared=('item', 'cate'), seq_len=6)
TINY = dict(embed_dim=4, width=8, num_heads=2, depth=2, ffn_mult=2, num_tokens=3, head_hidden=(8,))


def batch(n=4, seed=0):
  rng = np.random.default_rng(seed)
  seq = np.stack([rng.integers(0, 9, (n, 6)), rng.integers(0, 4, (n, 6))], 1)
  kept = np.array([6, 3, 0, 1])[:n, None, None]
  return {'label': np.zeros(n, np.float32),
          'cat': np.stack([rng.integers(0, v, n) for v in (5, 9, 4)], 1).astype(np.int32),
          'seq': np.where(np.arange(6) < 6 - kept, -1, seq).astype(np.int32)}


def test_causal_mask_hand_case():
  # 4 S-tokens then 2 NS-tokens: S_i sees S_0..S_i only; NS-tokens see everything.
  want = np.array([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                   [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], bool)
  np.testing.assert_array_equal(mixed_tokens.causal_mask(6, 6, 4), want)
  np.testing.assert_array_equal(mixed_tokens.causal_mask(6, 3, 4), want[3:])  # pyramid queries
  np.testing.assert_array_equal(mixed_tokens.causal_mask(6, 6, 4, ns_causal=True), np.tril(np.ones((6, 6), bool)))


def test_an_s_token_never_sees_a_later_s_token():
  att = mixed_tokens.MixedSelfAttention(num_heads=2, num_ns=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 3, 8))
  params = att.init(jax.random.PRNGKey(1), x)
  y = att.apply(params, x)
  y2 = att.apply(params, x.at[2].set(5.0))  # change S-token 2
  np.testing.assert_allclose(y2[:2], y[:2], rtol=1e-6)  # earlier S-tokens: unchanged
  assert not np.allclose(y2[3], y[3]) and not np.allclose(y2[4], y[4])  # later S, NS: changed
  # S-tokens share one kernel, NS-tokens have their own.
  assert params['params']['qkv']['s_kernel'].value.shape == (8, 24)
  assert params['params']['qkv']['ns_kernel'].value.shape == (2, 8, 24)


def test_mixed_layers_without_s_tokens_equal_todays_layers():
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 8))
  ref = layers.SelfAttention(num_heads=2)
  p = nn.unbox(ref.init(jax.random.PRNGKey(1), x)['params'])
  mixed = mixed_tokens.MixedSelfAttention(num_heads=2, num_ns=3)
  mp = {'qkv': {'ns_kernel': p['qkv']['kernel']}, 'out': {'ns_kernel': p['out']['kernel']}}
  np.testing.assert_allclose(mixed.apply({'params': mp}, x), ref.apply({'params': p}, x), rtol=1e-5, atol=1e-6)
  ref_ffn = layers.FeedForward(mult=2)
  p = nn.unbox(ref_ffn.init(jax.random.PRNGKey(2), x)['params'])
  mp = {k: {'ns_kernel': p[k]['kernel'], 'ns_bias': p[k]['bias']} for k in ('up', 'down')}
  np.testing.assert_allclose(mixed_tokens.MixedFeedForward(num_ns=3, mult=2).apply({'params': mp}, x),
                             ref_ffn.apply({'params': p}, x), rtol=1e-5, atol=1e-6)


def test_without_sequences_onetrans_is_unchanged():
  cfg = models.model_config('onetrans', **TINY)
  plain = Schema(cat_names=SCHEMA.cat_names, vocab_sizes=SCHEMA.vocab_sizes)
  m = models.build(cfg, plain)
  assert m.num_s_tokens() == 0 and m.make_backbone(name=None).mixer is layers.SelfAttention
  off = models.build(models.model_config('onetrans', seq_tokens=False, **TINY), SCHEMA)
  assert off.num_s_tokens() == 0 and off.keep_tokens() == ()


def test_pyramid_keeps_fewer_s_tokens_per_layer():
  # 6 S-tokens + 3 NS-tokens; the pyramid ends at the 3 NS-tokens after block 2.
  m = models.build(models.model_config('onetrans', pyramid_tokens=3, **TINY), SCHEMA)
  assert m.num_s_tokens() == 6 and m.keep_tokens() == (6, 3)
  s_per_layer = [max(k - 3, 0) for k in m.keep_tokens()]
  assert s_per_layer == [3, 0]
  b = batch()
  variables = m.init(jax.random.PRNGKey(0), b)
  apply = jax.jit(lambda x: m.apply(variables, x)[0])
  logits = apply(b)
  assert logits.shape == (4,) and bool(jnp.all(jnp.isfinite(logits)))
  # Padded history positions change nothing; the most recent item does.
  other = dict(b, seq=np.where(b['seq'] < 0, -7, b['seq']).astype(np.int32))
  np.testing.assert_allclose(apply(other), logits, rtol=1e-5, atol=1e-6)
  changed = b['seq'].copy()
  changed[0, 0, -1] = (changed[0, 0, -1] + 1) % 9
  assert not np.isclose(apply(dict(b, seq=changed))[0], logits[0])
  analytic = m.flops_per_example()
  xla = flops_lib.xla_flops_per_example(m, variables, b)
  assert 0.75 * xla <= analytic['total'] <= 1.25 * xla, (analytic, xla)


@pytest.mark.parametrize('connector', backbone.KINDS)
def test_every_connector_runs_on_s_tokens(connector):
  m = models.build(models.model_config('onetrans', connector=connector, pyramid_tokens=3, **TINY), SCHEMA)
  b = batch()
  out = jax.eval_shape(lambda x: m.apply(m.init(jax.random.PRNGKey(0), x), x)[0], b)
  assert out.shape == (4,)
