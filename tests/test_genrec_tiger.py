"""The TIGER pipeline end to end on the Beauty slice: valid decoded IDs, tokenizer not refitted."""
import json
import os

import numpy as np
import pytest

from deres_jax.genrec import rqkmeans
from deres_jax.genrec import tiger
from deres_jax.train import trainer
from test_genrec_sasrec import genrec_config

SLICE = os.path.join(os.path.dirname(__file__), 'data', 'genrec')


def test_token_layout_round_trips():
  layout = tiger.TokenLayout([4, 4, 3], num_user_tokens=5)
  codes = np.array([[-1, -1, -1], [0, 3, 2], [3, 0, 0]])
  tok = layout.item_tokens(codes)
  np.testing.assert_array_equal(tok[0], [0, 0, 0])
  np.testing.assert_array_equal(tok[1], [3, 3 + 4 + 3, 3 + 8 + 2])   # level offsets 3, 7, 11
  assert layout.vocab_size == 3 + 11 + 5
  enc = layout.encoder_input(np.array([7]), np.array([[0, 2, 1]]), tok)
  # Left-padded, the user token right before the first history item (TIGER's T5 input, right-padded).
  np.testing.assert_array_equal(enc[0], [0, 0, 0, layout.first_user + 2, *tok[2], *tok[1]])
  enc = layout.encoder_input(np.array([7, 8]), np.array([[0, 0, 0], [2, 1, 2]]), tok)
  np.testing.assert_array_equal(enc[:, -7:-6].ravel(), [0, tok[2][-1]])
  assert enc[0, -1] == layout.first_user + 2 and enc[1, 0] == layout.first_user + 3   # empty / full
  np.testing.assert_array_equal(layout.trim(enc, 1, 3), enc[:, -4:])
  dec_in, dec_out = layout.decoder_io(np.array([1]), tok)
  np.testing.assert_array_equal(dec_in[0], [tiger.BOS, *tok[1]])
  np.testing.assert_array_equal(dec_out[0], [*tok[1], tiger.EOS])


@pytest.fixture(scope='module')
def tiger_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('tiger'))
  config = genrec_config('beauty_tiger_rqkmeans')
  config.data.path = SLICE
  summary = trainer.train_and_evaluate(config, workdir)
  return config, workdir, summary


def test_tiger_decodes_only_real_items(tiger_run):
  config, workdir, summary = tiger_run
  stats = summary['tokenizer']
  assert stats['id_length'] == config.tokenizer.levels + 1
  assert summary['decoded_ids'] > 0 and summary['incomplete_beams'] == 0
  assert os.path.exists(os.path.join(workdir, 'tokenizer', 'sids.npz'))
  assert 0 <= summary['test']['recall@10'] <= 1 and summary['decode_ms_per_user']['median'] > 0


def test_finished_tokenizer_is_not_refitted(tiger_run, monkeypatch):
  config, workdir, first = tiger_run

  def refit(*args, **kwargs):
    raise AssertionError('the tokenizer was refitted')

  monkeypatch.setattr(rqkmeans, 'fit', refit)
  config.train.num_steps = 12  # the retriever resumes from step 8 and trains 4 more
  summary = trainer.train_and_evaluate(config, workdir)
  assert summary['tokenizer'] == first['tokenizer']
  steps = [json.loads(l)['step'] for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert max(steps) == 12


def test_capsid_bpe_pipeline_decodes_only_real_items(tmp_path):
  config = genrec_config('beauty_capsid_bpe')
  config.data.path = SLICE
  config.tokenizer.update(steps=10, stage2_steps=2, max_levels=2, routing_iters=2)  # fewer ops to compile
  config.bpe.update(theta_start=0.0, theta_end=-1.0)   # 8 random-ish capsules per level: few pairs pass 0.9
  config.train.update(num_steps=4, log_every=4)
  config.eval.update(every_steps=4, num_val_users=64, batch_size=400)  # one decode call for the test split
  summary = trainer.train_and_evaluate(config, str(tmp_path))
  assert summary['tokenizer']['tokenizer'] == 'capsid' and summary['bpe']['merges'] > 0
  # Merges shorten the item strings; the trie still only yields real items.
  assert summary['bpe']['tokens_per_item'] < summary['bpe']['tokens_per_item_before']
  assert summary['decoded_ids'] > 0 and summary['incomplete_beams'] == 0
  assert sum(summary['tokenizer']['id_length_hist']) == 3354
  diag = summary['tokenizer']
  assert abs(sum(diag['stop_rule_share'].values()) - 1) < 1e-6 and 0 <= diag['collision_rate'] <= 1
  assert summary['bpe']['distinct_first_tokens_before'] <= diag['utilisation_per_level'][0] * 8
  # Per-position vocabularies: position 0 before BPE holds exactly the distinct first tokens; a
  # merged first token shows in the share and adds to position 0's vocabulary.
  b = summary['bpe']
  assert b['tokens_per_position_before'][0] == b['distinct_first_tokens_before']
  assert b['tokens_per_position'][0] == b['distinct_first_tokens']
  if b['first_token_merged_share'] == 0:   # no merged first token: the trie's first level is the base one
    assert b['distinct_first_tokens'] == b['distinct_first_tokens_before']
  assert len(b['tokens_per_position']) <= len(b['tokens_per_position_before'])
  assert 'cold/recall@10' in summary['test'] and 'pop_tail/users' in summary['test']
