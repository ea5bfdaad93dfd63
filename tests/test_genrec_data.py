"""genrec/data.py: leave-one-out split, windows, content and collaborative features."""
import json
import os

import numpy as np
import pytest

from deres_jax.genrec import data as data_lib

SLICE = os.path.join(os.path.dirname(__file__), 'data', 'genrec')


@pytest.fixture(scope='module')
def beauty():
  users, seqs = data_lib.read_sequences(os.path.join(SLICE, 's3rec', 'Beauty.txt'))
  return users, seqs, data_lib.leave_one_out(users, seqs)


def _is_substring(small, big):
  n = len(small)
  return any(np.array_equal(big[i:i + n], small) for i in range(len(big) - n + 1))


def test_leave_one_out_never_lets_a_test_item_into_training(beauty):
  _, seqs, d = beauty
  assert d.num_items == 3354 and len(d.train_seqs) == 400
  for r, s in enumerate(seqs):
    np.testing.assert_array_equal(d.train_seqs[r], s[:-2])
    assert d.test_target[r] == s[-1] and d.val_target[r] == s[-2]
    # The validation history is the training part, the test history adds the validation item.
    hist = d.test_hist[r][d.test_hist[r] > 0]
    np.testing.assert_array_equal(hist, s[:-1][-20:])
  # Sliding windows: every (history, target) is a contiguous piece of the user's training part,
  # and there is one per training transition.
  rows, hist, target = data_lib.sliding_windows(d)
  assert len(target) == sum(len(s) - 1 for s in d.train_seqs)
  for r, h, t in zip(rows, hist, target):
    assert _is_substring(np.append(h[h > 0], t), d.train_seqs[r])
  # Training counts are those of the training parts only.
  count = np.bincount(np.concatenate(d.train_seqs), minlength=d.num_items + 1)
  np.testing.assert_array_equal(count, d.train_count)


def test_histories_are_capped_and_causal_windows_cover_each_transition_once():
  seqs = [np.arange(1, 48, dtype=np.int32), np.array([3, 1, 2, 5, 4], np.int32)]
  d = data_lib.leave_one_out(np.array([7, 8]), seqs, max_len=20)
  np.testing.assert_array_equal(d.test_hist[0], np.arange(27, 47))  # last 20 before the test item
  np.testing.assert_array_equal(d.val_hist[1], [0] * 17 + [3, 1, 2])
  _, hist, _ = data_lib.sliding_windows(d)
  assert (hist > 0).sum(1).max() == 20
  inputs, targets = data_lib.causal_windows(d)
  pairs = sorted((int(a), int(b)) for i, o in zip(inputs, targets) for a, b in zip(i, o) if b)
  want = sorted((int(a), int(b)) for s in d.train_seqs for a, b in zip(s[:-1], s[1:]))
  assert pairs == want


def test_collaborative_features_see_training_sequences_only(beauty):
  users, seqs, d = beauty
  rng = np.random.default_rng(0)
  # Replace every validation and test item by a random one: the training parts are unchanged.
  changed = [np.concatenate([s[:-2], rng.integers(1, d.num_items + 1, 2)]).astype(np.int32) for s in seqs]
  d2 = data_lib.leave_one_out(users, changed, num_items=d.num_items)
  a = data_lib.collaborative_features(d, 16)
  np.testing.assert_array_equal(a, data_lib.collaborative_features(d2, 16))
  # Items that never occur in a training part get no collaborative vector.
  unseen = np.flatnonzero(d.train_count == 0)
  assert len(unseen) > 1 and np.all(a[unseen] == 0)


def test_attribute_features_are_an_exact_factorisation_of_tfidf(tmp_path):
  attrs = {'1': [0, 1], '2': [1, 2, 3], '3': [0, 1], '4': [3]}
  path = tmp_path / 'a.json'
  path.write_text(json.dumps(attrs))
  x = data_lib.attribute_features(str(path), 4, dim=8)   # dim >= rank: nothing is truncated
  tf = np.zeros((5, 4))
  for k, v in attrs.items():
    tf[int(k), v] = 1 / len(v)
  tfidf = tf * (np.log(5 / (1 + (tf > 0).sum(0))) + 1)
  tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
  # U S (U S)^T = M M^T: the SVD vectors keep every inner product of the TF-IDF rows.
  np.testing.assert_allclose(x @ x.T, tfidf @ tfidf.T, atol=1e-5)
  np.testing.assert_array_equal(x[1], x[3])  # same attributes, same vector


def test_bad_input_stops_with_one_sentence(tmp_path):
  with pytest.raises(FileNotFoundError, match='nothing is downloaded'):
    data_lib.load(str(tmp_path), 'beauty')
  with pytest.raises(ValueError, match='unknown dataset'):
    data_lib.load(str(tmp_path), 'movies')
  (tmp_path / 's3rec').mkdir()
  (tmp_path / 's3rec' / 'Beauty.txt').write_text('1 4 5 6\n2 7 8\n')
  with pytest.raises(ValueError, match='at least 3 items'):
    data_lib.load(str(tmp_path), 'beauty')
