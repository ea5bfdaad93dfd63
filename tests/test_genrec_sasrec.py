"""genrec/sasrec.py: causality, learning a rule with either loss, sampled softmax (exact resume of a
genrec run: tests/test_spine.py)."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.genrec import sasrec
from deres_jax.train import trainer
from deres_jax.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def genrec_config(name, preset='tiny'):
  return load_file(os.path.join(ROOT, 'configs', 'genrec', f'{name}.py'), preset)


def successor_data(directory, num_items=30, num_users=160, length=8, seed=0):
  """Synthetic sequences s, s+1, s+2, ... (mod N): the next item is a known function of the last."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(directory, 's3rec'), exist_ok=True)
  with open(os.path.join(directory, 's3rec', 'Beauty.txt'), 'w') as f:
    for u in range(num_users):
      s = rng.integers(num_items)
      f.write(' '.join(str(v) for v in [u + 1] + [(s + t) % num_items + 1 for t in range(length)]) + '\n')
  return directory


def test_sasrec_is_causal():
  model = sasrec.SASRec(num_items=20, max_len=6, width=16, depth=2, dropout=0.0)
  seq = jnp.array([[0, 0, 3, 7, 9, 2]])
  params = jax.jit(model.init)(jax.random.PRNGKey(0), seq)['params']
  h = model.apply({'params': params}, seq)
  h2 = model.apply({'params': params}, seq.at[0, 5].set(11))   # change the last item only
  np.testing.assert_allclose(h[0, :5], h2[0, :5], atol=1e-6)
  assert not np.allclose(h[0, 5], h2[0, 5])
  # Scores are tied to the item embeddings: <h, M_i> for every item id.
  s = model.apply({'params': params}, h[:, -1], method=sasrec.SASRec.scores)
  np.testing.assert_allclose(s, h[:, -1] @ params['item_embed']['embedding'].T, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def successor_dir(tmp_path_factory):
  return successor_data(str(tmp_path_factory.mktemp('succ')))


@pytest.mark.parametrize('loss', ['full', 'sampled'])
def test_sasrec_learns_the_successor_rule_with_either_loss(successor_dir, tmp_path, loss):
  config = genrec_config('beauty_sasrec')
  config.data.path = successor_dir
  config.model.update(width=32, depth=1, dropout=0.0, loss=loss, num_negatives=8)
  config.optim.update(learning_rate=1e-2, embed_learning_rate=1e-2)
  config.train.update(batch_size=32, num_steps=60, log_every=30, loss_fraction=1.0)
  config.eval.update(every_steps=60)
  config.ckpt.every_steps = 60
  summary = trainer.train_and_evaluate(config, str(tmp_path))
  # Random ranking gives Recall@5 = 5/30; the rule is learnable exactly, also from 8 negatives.
  assert summary['test']['recall@5'] > 0.9, summary['test']


def test_sampled_softmax_matches_a_numpy_transcription():
  """-log e^{r(t)} / (e^{r(t)} + sum over drawn negatives != t of e^{r(j)}), same draw."""
  model = sasrec.SASRec(num_items=5, max_len=4, width=8, depth=1, dropout=0.0, loss='sampled', num_negatives=12)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32))['params']
  h = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 8)))
  t = np.array([1, 3, 5])
  rng = jax.random.PRNGKey(7)
  ce = np.asarray(sasrec._sampled_ce(model, params, jnp.asarray(h), jnp.asarray(t), rng))
  neg = np.asarray(jax.random.randint(rng, (12,), 1, 6))
  table = np.asarray(params['item_embed']['embedding'])
  for n in range(3):
    pos = h[n] @ table[t[n]]
    negs = [h[n] @ table[j] for j in neg if j != t[n]]   # accidental hits dropped
    ref = -(pos - np.log(np.exp(pos) + np.sum(np.exp(negs))))
    np.testing.assert_allclose(ce[n], ref, rtol=1e-5)
  assert len(set(neg)) < 12  # the draw has repeats and hits: the masking above was exercised


