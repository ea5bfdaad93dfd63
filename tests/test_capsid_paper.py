"""genrec/capsid.py against the paper's equations (research/capsid.md §9.1), written again in NumPy."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from deres_jax.genrec import capsid
from deres_jax.genrec import capsid_fit


def _np_squash(z, k=0.5):
  n2 = (z ** 2).sum(-1, keepdims=True)
  return n2 / (k + n2) * z / np.sqrt(n2 + 1e-9)


def _np_tokenize(r0, W, b, T, tau, eps, L_max, hard=False, fixed=0):
  """The paper's tokenizer for one item, transcribed loop by loop (no vectorisation, no JAX)."""
  r, tokens, confs, rule, r_hat = r0.astype(np.float64), [], [], None, np.zeros_like(r0, np.float64)
  for l in range(L_max):
    u = np.stack([W[l, k] @ r + b[l, k] for k in range(W.shape[1])])      # votes u_k = W_lk r + b_lk
    a = np.zeros(len(u))
    for _ in range(T):                                                    # routing from zero logits
      c = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
      o = _np_squash((c[:, None] * u).sum(0))
      a = a + u @ o
    c = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
    o = _np_squash((c[:, None] * u).sum(0))
    s = int(np.argmax(c))
    conf = c.max() * np.linalg.norm(o)                                    # q_l = max_k c_k ||o||
    q = _np_squash(u[s]) if hard else sum(c[k] * _np_squash(u[k]) for k in range(len(u)))
    r = r - q                                                             # soft (or hard) residual
    r_hat = r_hat + q
    tokens.append(s)
    confs.append(conf)
    if fixed:
      if l + 1 == fixed:
        rule = 'cap'
        break
    elif conf >= tau:
      rule = 'confidence'
      break
    elif np.linalg.norm(r) <= eps:
      rule = 'residual'
      break
  return tokens, confs, rule or 'cap', r_hat, r


def _model(**kw):
  base = dict(input_dim=3, hidden=(), latent_dim=3, max_levels=3, num_capsules=4, adapter_rank=2)
  base.update(kw)
  return capsid.CapsID(**base)


def _params(model, W, b):
  """The routing parameters only (tokenize never touches the projection or the decoder)."""
  L, _, D, _ = np.shape(W)
  rng = np.random.default_rng(5)
  return {'pose': jnp.asarray(W, jnp.float32), 'bias': jnp.asarray(b, jnp.float32),
          'adapter_a': jnp.asarray(rng.normal(size=(L, D, model.adapter_rank)), jnp.float32),
          'adapter_b': jnp.zeros((L, model.adapter_rank, D))}


def _tok(model, params, r):
  fn = jax.jit(lambda p, r: model.apply({'params': p}, r, method=capsid.CapsID.tokenize))
  return jax.tree.map(np.asarray, fn(params, jnp.asarray(r, jnp.float32)))


def test_routing_equals_a_numpy_transcription_of_the_paper():
  rng = np.random.default_rng(0)
  W, b = rng.normal(0, 0.8, (3, 4, 3, 3)), rng.normal(0, 1.0, (3, 4, 3))
  r0 = rng.normal(size=(12, 3))
  r0 /= np.linalg.norm(r0, axis=1, keepdims=True)
  for kw in (dict(), dict(tau=0.3, eps=0.5), dict(iters=1, residual='hard', fixed_length=3)):
    model = _model(**kw)
    out = _tok(model, _params(model, W, b), r0)
    for i in range(len(r0)):
      toks, confs, rule, r_hat, _ = _np_tokenize(r0[i], W, b, model.iters, model.tau, model.eps, 3,
                                                 hard=model.residual == 'hard', fixed=model.fixed_length)
      n = len(toks)
      assert out['length'][i] == n
      np.testing.assert_array_equal(out['tokens'][i, :n], toks)
      assert np.all(out['tokens'][i, n:] == -1)
      np.testing.assert_allclose(out['conf'][i, :n], confs, rtol=1e-4, atol=1e-5)
      assert capsid.STOP_RULES[out['stop_rule'][i]] == rule
      np.testing.assert_allclose(out['r_hat'][i], r_hat, rtol=1e-4, atol=1e-5)
  # squash with the paper's 0.5: |squash(z)| = |z|^2 / (0.5 + |z|^2), parallel to z.
  z = rng.normal(0, 2, (5, 3))
  np.testing.assert_allclose(np.asarray(capsid.squash(jnp.asarray(z))), _np_squash(z), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(capsid.unsquash(capsid.squash(jnp.asarray(z, jnp.float32)))), z, rtol=1e-3)


def test_each_stopping_rule_fires_on_a_constructed_item():
  model = _model()
  e1, e2 = np.eye(3)[0], np.eye(3)[1]
  W0 = np.zeros((3, 4, 3, 3))
  # Confidence: one capsule's vote dominates (|b_0| = 10: c_0 -> 1 and |o| -> 0.995 >= 0.82), and r = e2
  # stays far from squash(b_0) ~ e1, so the residual rule cannot be the one that fires.
  b = np.full((3, 4, 3), 0.01)
  b[:, 0] = 10 * e1
  out = _tok(model, _params(model, W0, b), e2[None])
  assert out['length'][0] == 1 and capsid.STOP_RULES[out['stop_rule'][0]] == 'confidence'
  assert out['conf'][0, 0] >= 0.82 and out['res_norm'][0, 0] > 0.08
  # Residual: all capsules vote the same unsquash(r): uniform coefficients (confidence <= 1/4) but the
  # routed reconstruction is r itself, so ||r_1|| = 0 <= 0.08.
  r = np.array([0.54, 0.72, 0.0])
  b = np.broadcast_to(np.asarray(capsid.unsquash(jnp.asarray(r, jnp.float32))), (3, 4, 3))
  out = _tok(model, _params(model, W0, b), r[None])
  assert out['length'][0] == 1 and out['res_norm'][0, 0] <= 0.08
  assert capsid.STOP_RULES[out['stop_rule'][0]] == 'residual' and out['conf'][0, 0] < 0.82
  # Cap: four weak opposite votes: no confident capsule and the residual never shrinks: L = L_max.
  b = np.broadcast_to(0.3 * np.array([e1, -e1, e2, -e2]), (3, 4, 3))
  out = _tok(model, _params(model, W0, b), (0.6 * e1 + 0.8 * np.eye(3)[2])[None])
  assert out['length'][0] == 3 and capsid.STOP_RULES[out['stop_rule'][0]] == 'cap'


def test_length_never_exceeds_the_cap_and_tokens_end_with_the_id():
  rng = np.random.default_rng(1)
  model = _model(max_levels=4, tau=0.4, eps=0.3)
  W, b = rng.normal(0, 1, (4, 4, 3, 3)), rng.normal(0, 1, (4, 4, 3))
  out = _tok(model, _params(model, W, b), rng.normal(size=(256, 3)))
  assert np.all((out['length'] >= 1) & (out['length'] <= 4))
  assert len(np.unique(out['length'])) > 1                # variable length on this draw
  assert np.all((out['tokens'] >= 0).sum(1) == out['length'])
  assert 1.0 <= float(out['expected_length']) <= 4      # the smooth E[L] lives in [1, L_max]
  fixed = _model(fixed_length=2, max_levels=4)
  out = _tok(fixed, _params(fixed, W, b), rng.normal(size=(16, 3)))
  assert np.all(out['length'] == 2) and np.all(out['tokens'][:, 2:] == -1)


def test_one_iteration_hard_winner_fixed_length_is_residual_quantisation_with_affine_votes():
  """T = 1, hard winners, fixed length L: r_l = r_{l-1} - squash(W_s r_{l-1} + b_s), s = argmax_k u_k . o_0,
  o_0 = squash(mean_k u_k); so r_0 = sum_l codeword_l + r_L exactly (residual quantisation)."""
  rng = np.random.default_rng(2)
  W, b = rng.normal(0, 0.7, (3, 4, 3, 3)), rng.normal(0, 1, (3, 4, 3))
  model = _model(iters=1, residual='hard', fixed_length=3)
  r0 = rng.normal(size=(20, 3))
  out = _tok(model, _params(model, W, b), r0)
  for i in range(len(r0)):
    r, words = r0[i], []
    for l in range(3):
      u = np.einsum('kde,e->kd', W[l], r) + b[l]
      s = int(np.argmax(u @ _np_squash(u.mean(0))))         # one agreement step from uniform coefficients
      assert out['tokens'][i, l] == s
      words.append(_np_squash(u[s]))
      r = r - words[-1]
    np.testing.assert_allclose(out['r_hat'][i], sum(words), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out['r_hat'][i] + r, r0[i], rtol=1e-4, atol=1e-5)   # telescoping residual


def test_spread_loss_matches_its_definition():
  c = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
  for m in (0.2, 0.9):
    want = [np.mean([max(0, m - (row.max() - row[k])) ** 2 for k in range(3) if k != row.argmax()]) for row in c]
    np.testing.assert_allclose(np.asarray(capsid.spread_loss(jnp.asarray(c), m)), want, rtol=1e-5)
  assert capsid_fit.margin_at(0, 100) == 0.2 and abs(capsid_fit.margin_at(100, 100) - 0.9) < 1e-12


def _clusters(n=240, d=8, k=4, seed=0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 4, (k, d))
  label = rng.integers(k, size=n)
  return (centres[label] + rng.normal(0, 0.5, (n, d))).astype(np.float32), label


def _cfg(**kw):
  base = dict(steps=20, stage2_steps=5, batch_size=120, learning_rate=1e-2, kmeans_iters=5, log_every=10,
              recon_weight=1.0, spread_weight=1.0, length_weight=0.1, spread_anneal_steps=20, pose_init=2.0,
              vote_scale=(4.0, 4.0, 16.0))
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_stage_one_learns_clusters_and_stage_two_freezes_all_but_the_adapter():
  x, label = _clusters()
  model = capsid.CapsID(input_dim=8, hidden=(16,), latent_dim=4, max_levels=2, num_capsules=8, adapter_rank=2)
  params, hist = capsid_fit.fit(model, x, np.arange(200), _cfg(), log=lambda _: None)
  assert hist[-1]['recon'] < hist[0]['recon']
  # The simple rule: the first token identifies the item's cluster (purity of the first-level capsules).
  first = capsid_fit.route_items(model, params, x)['tokens_all'][:, 0]
  purity = sum(np.bincount(label[first == t]).max() for t in np.unique(first)) / len(x)
  assert purity > 0.9, purity
  p2, _ = capsid_fit.fit(model, x, np.arange(200), _cfg(), log=lambda _: None, params=params, stage=2)
  for name in params:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(p2[name])))
    assert same != name.startswith('adapter_'), name    # centres, poses, projection bit-identical
  assert not np.array_equal(np.asarray(params['adapter_b']), np.asarray(p2['adapter_b']))


def test_init_centres_the_projection_and_ranks_capsules_as_nearest_centroid():
  """capsid_fit.init_params: z = P(x) has mean 0 on the training rows, and at layer 1 (||r_0|| = 1 = n)
  u_k . r_0 = s_1 (w + 1/2 - ||r_0 - mu_k||^2 / 2) exactly (no pose noise): the first agreement with o
  along r_0 picks the nearest centroid mu_k = b_k n / s_1, whatever the scale."""
  x, _ = _clusters()
  model = capsid.CapsID(input_dim=8, hidden=(16,), latent_dim=4, max_levels=2, num_capsules=8, adapter_rank=2)
  w, s = 2.0, 3.0
  p = capsid_fit.init_params(model, x, 0, kmeans_iters=5, pose_init=w, vote_scale=(s,), pose_noise=0.0)
  bound = model.bind({'params': p})
  z = np.asarray(bound.enc[1](jax.nn.relu(bound.enc[0](jnp.asarray(x)))))
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
  r0 = np.asarray(bound.encode(jnp.asarray(x)))
  u = np.asarray(capsid.votes(jnp.asarray(r0), p['pose'][0], p['bias'][0]))          # [n, K, D]
  mu = np.asarray(p['bias'][0]) / s
  d2 = ((r0[:, None] - mu[None]) ** 2).sum(-1)
  np.testing.assert_allclose(np.einsum('nkd,nd->nk', u, r0), s * (w + 0.5 - d2 / 2), rtol=1e-4, atol=1e-4)


def test_confidence_needs_a_vote_norm_and_a_logit_gap():
  """q = max_k c_k ||o|| >= tau needs ||o|| >= tau, i.e. |v| >= sqrt(0.5 tau / (1 - tau)) (1.51 for 0.82), and
  max_k c_k >= tau over K capsules with one winner a gap g above K - 1 equal rivals needs
  g >= ln((K - 1) tau / (1 - tau)) (7.05 for K = 256): the numbers init_params' docstring uses."""
  tau, K = 0.82, 256
  v = np.sqrt(0.5 * tau / (1 - tau))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(capsid.squash(jnp.array([v, 0.0])))), tau, rtol=1e-5)
  gap = np.log((K - 1) * tau / (1 - tau))
  assert abs(gap - 7.05) < 0.01
  for g, ok in ((gap + 1e-3, True), (gap - 1e-3, False)):
    c = np.asarray(jax.nn.softmax(jnp.array([g] + [0.0] * (K - 1), jnp.float32)))
    assert (c.max() >= tau) == ok


def test_a_sharp_layer_cannot_end_a_small_residual():
  """Why the residual rule (||r_l|| <= eps) rarely fires: a layer subtracts q = sum_k c_k squash(u_k) with
  ||q|| >= c_s ||squash(u_s)|| - (1 - c_s) (each ||squash|| < 1), and ||r_l|| >= | ||r_{l-1}|| - ||q|| |. With the
  paper's mean winner weight c_s = 0.86 and a winner vote of norm 1.51 (the norm ||o|| >= tau = 0.82 needs of
  the mixed vote v),
  ||q|| >= 0.565, so the residual rule needs ||r_{l-1}|| >= 0.485: a sharp layer overshoots a small residual."""
  rng = np.random.default_rng(3)
  for _ in range(200):
    u = rng.normal(0, rng.uniform(0.1, 5), (6, 3))
    c = rng.dirichlet(np.full(6, 0.3))
    q = np.asarray(capsid.routed_vote(jnp.asarray(u[None], jnp.float32), jnp.asarray(c[None], jnp.float32)))[0]
    s = int(np.argmax(c))
    assert np.linalg.norm(q) >= c[s] * np.linalg.norm(_np_squash(u[s])) - (1 - c[s]) - 1e-5
  m = np.sqrt(0.5 * 0.82 / 0.18)
  bound = 0.86 * m ** 2 / (0.5 + m ** 2) - 0.14
  assert abs(bound - 0.565) < 1e-3 and abs(bound - 0.08 - 0.485) < 1e-3
  # Hand case: r = 0.1 e1 and one dominant vote 10 e1, perfectly aligned with r: q = 0.995 e1, so
  # ||r_1|| = 0.895, the residual rule cannot fire (the confidence rule ends it); the same vote direction
  # at norm unsquash(0.1) removes r.
  model = _model(max_levels=1)
  e1, W0 = np.eye(3)[0], np.zeros((1, 4, 3, 3))
  b = np.full((1, 4, 3), 0.01)
  b[0, 0] = 10 * e1
  out = _tok(model, _params(model, W0, b), 0.1 * e1[None])
  np.testing.assert_allclose(out['res_norm'][0, 0], 0.995 - 0.1, atol=2e-3)
  np.testing.assert_allclose(out['sub_norm'][0, 0], 0.995, atol=2e-3)
  assert out['winner'][0, 0] > 0.99 and out['res_norm'][0, 0] > 0.08   # confident, so the ID ends there anyway
  assert capsid.STOP_RULES[out['stop_rule'][0]] == 'confidence'
  b = np.broadcast_to(np.asarray(capsid.unsquash(jnp.asarray(0.1 * e1, jnp.float32))), (1, 4, 3))
  out = _tok(model, _params(model, W0, b), 0.1 * e1[None])
  assert out['res_norm'][0, 0] <= 0.08 and capsid.STOP_RULES[out['stop_rule'][0]] == 'residual'
  assert out['winner'][0, 0] < 0.26                       # ... but only with flat coefficients (1/K = 0.25)


def test_per_layer_residual_diagnostics_average_over_the_items_that_reach_the_layer():
  from deres_jax.genrec import tokenizer_stats
  routed = {'length': np.array([1, 2]), 'stop_rule': np.array([0, 2]), 'conf': np.array([[0.9, 0.1], [0.2, 0.3]]),
            'res_norm': np.array([[0.5, 9.0], [0.1, 0.7]]), 'sub_norm': np.array([[0.6, 9.0], [0.95, 0.6]]),
            'winner': np.array([[0.9, 9.0], [0.3, 0.5]])}
  d = tokenizer_stats.diagnostics(np.array([[3, -1], [4, 5]]), 8, None, routed)
  np.testing.assert_allclose(d['mean_residual_norm_per_level'], [0.3, 0.7])
  np.testing.assert_allclose(d['mean_subtracted_norm_per_level'], [0.775, 0.6])
  np.testing.assert_allclose(d['mean_winner_weight_per_level'], [0.6, 0.5])
  np.testing.assert_allclose(d['mean_winner_weight'], (0.9 + 0.3 + 0.5) / 3)
  assert d['stop_rule_share'] == {'confidence': 0.5, 'residual': 0.0, 'cap': 0.5}
