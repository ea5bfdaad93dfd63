"""genrec/cobra.py: BeamFusion on hand-built cases; the COBRA-style pipeline end to end returns real items."""
import os

import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.genrec import cobra
from deres_jax.genrec import tasks
from deres_jax.train import trainer
from test_genrec_sasrec import genrec_config

SLICE = os.path.join(os.path.dirname(__file__), 'data', 'genrec')


def _two_beams():
  # Beam 0 names item 1 with the higher probability, beam 1 item 2 with a lower one. Beam 0's dense
  # vector is nearly orthogonal to every item (cos 0.1 with its own), beam 1's equals item 2's.
  logp = jnp.array([[-1.0, -3.0]])
  items = jnp.array([[1, 2]])
  item_vec = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])   # row 0 = padding
  vec = jnp.array([[[0.1, 0.0, float(np.sqrt(0.99))], [0.0, 1.0, 0.0]]])
  return logp, vec, items, item_vec


@pytest.mark.parametrize('candidates', ['beam', 'ann'])
def test_fusion_weight_decides_between_probability_and_cosine(candidates):
  logp, vec, items, item_vec = _two_beams()
  # Fusion by hand: softmax of the beams' log-probs gives log p = (-0.127, -2.127).
  p = np.log(np.exp([-1.0, -3.0]) / np.exp([-1.0, -3.0]).sum())
  cos = np.array([0.1, 1.0])   # each beam's vector against its own item
  for w, winner in ((0.1, 1), (0.9, 2)):
    got, scores = cobra.beam_fusion(logp, vec, items, item_vec, w, 1.0, 2, candidates)
    assert int(got[0, 0]) == winner
    if candidates == 'beam':   # only the beams' own items compete, scored as stated
      np.testing.assert_allclose(np.sort(np.asarray(scores[0]))[::-1],
                                 np.sort((1 - w) * p + w * cos)[::-1], atol=1e-4)
  # w = 0: the beam order exactly (TIGER); candidates='ann' ties every item of a beam, so only 'beam' checks it.
  if candidates == 'beam':
    assert np.asarray(cobra.beam_fusion(logp, vec, items, item_vec, 0.0, 1.0, 2, 'beam')[0])[0].tolist() == [1, 2]


def test_ann_candidates_reach_items_outside_the_beams_and_never_padding():
  logp, vec, items, item_vec = _two_beams()
  item_vec = jnp.concatenate([item_vec, jnp.array([[0.0, 0.0, 1.0]])])   # item 3: no beam names it
  got, _ = cobra.beam_fusion(logp, vec, items, item_vec, 0.9, 10.0, 3, 'ann')
  assert int(got[0, 0]) == 3 and sorted(np.asarray(got[0]).tolist()) == [1, 2, 3]   # beam 0's vector finds it
  beam_only, _ = cobra.beam_fusion(logp, vec, items, item_vec, 0.9, 10.0, 3, 'beam')
  assert 3 not in np.asarray(beam_only[0]).tolist() and int(beam_only[0, 2]) == 0  # only two candidates exist
  # A beam that found no ID (-inf, item 0) contributes nothing.
  dead = cobra.beam_fusion(jnp.array([[-1.0, -jnp.inf]]), vec, jnp.array([[1, 0]]), item_vec, 0.5, 1.0, 2, 'beam')
  assert np.asarray(dead[0])[0].tolist() == [1, 0]


def test_cobra_pipeline_returns_only_real_items(tmp_path, monkeypatch):
  config = genrec_config('beauty_cobra')
  config.data.path = SLICE
  config.tokenizer.steps = 10
  config.train.update(num_steps=4, log_every=4)
  config.eval.update(every_steps=4, num_val_users=64, batch_size=200)   # two decode calls for the test split
  seen = []
  rank = tasks.CobraTask._rank
  monkeypatch.setattr(tasks.CobraTask, '_rank', lambda self, p, e: seen.append(np.asarray(rank(self, p, e))) or
                      seen[-1])
  summary = trainer.train_and_evaluate(config, str(tmp_path))
  items = np.concatenate(seen)
  assert summary['system'] == 'cobra' and items.shape[1] == config.eval.beam_size
  assert items.min() >= 1 and items.max() <= 3354                 # catalogue ids only, never padding
  assert all(len(set(r)) == len(r) for r in items.tolist())       # no item twice in one list
  assert summary['incomplete_beams'] == 0 and summary['decode_ms_per_user']['median'] > 0
