"""Tokenizer diagnostics of CAPSID's paper (research/capsid.md §9.4) for every semantic-ID tokenizer.

For codes [n, L] (-1 = unused position; the disambiguation token excluded by the caller):
  collision rate     = share of items whose ID equals another item's              (lower is better)
  utilisation        = mean over levels of |codes used at level l| / K            (higher)
  Gini of code usage = mean over levels of the Gini coefficient of the K code counts,
                       G = sum_i (2i - K - 1) n_(i) / (K sum n), counts ascending   (lower)
  intra-code sim.    = mean cosine between two different items with the same first-level code,
                       over all such pairs, on the tokenizer's input vectors x      (higher)
  (the paper does not say at which level it measures similarity; the first level is our choice)
CAPSID also reports which stopping rule ended each ID (confidence / residual / cap), the
length histogram and, per layer l over the items whose ID reaches l, the mean residual norm ||r_l||
after the layer, the norm of what the layer subtracts ||sum_k c_k squash(u_k)|| and the winner weight
max_k c_k (the paper measures a mean winner weight of 0.86). Why these: the residual rule can end an
ID at layer l only if | ||r_{l-1}|| - ||subtracted|| | <= eps (triangle inequality), so a layer that
subtracts a near-unit vector from a small residual overshoots (results/capsid_tokenizer_beauty.md).
Evaluation slices (genrec/family.py): 'cold' = test targets with fewer than 5
training interactions (the paper's cold-start items), and 'pop_head' / 'pop_torso' /
'pop_tail' = targets among the most / middle / least popular thirds of the catalogue by training
count (ties by id; the paper's cut points are not given).
"""
import numpy as np


def collision_rate(codes: np.ndarray) -> float:
  """Share of items whose code row equals at least one other item's."""
  _, inv, counts = np.unique(np.asarray(codes), axis=0, return_inverse=True, return_counts=True)
  return float((counts[inv.ravel()] > 1).mean())


def gini(counts: np.ndarray) -> float:
  """Gini coefficient of non-negative counts (0 = uniform use, -> 1 = one code takes everything)."""
  c = np.sort(np.asarray(counts, np.float64))
  k, total = len(c), c.sum()
  if total == 0:
    return 0.0
  return float(((2 * np.arange(1, k + 1) - k - 1) * c).sum() / (k * total))


def intra_code_similarity(codes: np.ndarray, x: np.ndarray) -> float:
  """Mean cosine of x between distinct items sharing the first-level code (NaN if no code has two items)."""
  u = np.asarray(x, np.float64)
  u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
  total, pairs = 0.0, 0
  for c in np.unique(codes[:, 0]):
    g = u[codes[:, 0] == c]
    if len(g) > 1:
      s = g.sum(0)
      total += s @ s - len(g)             # sum_{i != j} cos(u_i, u_j) for unit vectors
      pairs += len(g) * (len(g) - 1)
  return float(total / pairs) if pairs else float('nan')


def diagnostics(codes: np.ndarray, codebook_size: int, x: np.ndarray = None, routed: dict = None) -> dict:
  """The paper's tokenizer diagnostics (module docstring).

  Args:
    codes: [n, L] int codes, -1 at unused positions, without the collision (disambiguation) token.
    codebook_size: K, codes per level.
    x: [n, d] tokenizer input vectors (for the intra-code similarity; None skips it).
    routed: CAPSID's routing output (capsid_fit.route_items) for the stop rules; None otherwise.
  Returns:
    dict of floats and lists.
  """
  from deres_jax.genrec import capsid  # pylint: disable=g-import-not-at-top
  codes = np.asarray(codes)
  levels = [codes[:, l][codes[:, l] >= 0] for l in range(codes.shape[1])]
  levels = [v for v in levels if len(v)]
  counts = [np.bincount(v, minlength=codebook_size) for v in levels]
  length = (codes >= 0).sum(1)
  out = {'collision_rate': collision_rate(codes),
         'utilisation': float(np.mean([(c > 0).mean() for c in counts])),
         'utilisation_per_level': [float((c > 0).mean()) for c in counts],
         'gini': float(np.mean([gini(c) for c in counts])),
         'length_hist': np.bincount(length, minlength=codes.shape[1] + 1).tolist(),
         'mean_length': float(length.mean())}
  if x is not None:
    out['intra_code_similarity'] = intra_code_similarity(codes, x)
  if routed is not None:
    rule = np.bincount(np.asarray(routed['stop_rule']), minlength=len(capsid.STOP_RULES)) / len(codes)
    out['stop_rule_share'] = {name: float(v) for name, v in zip(capsid.STOP_RULES, rule)}
    out['routed_length_hist'] = np.bincount(routed['length'], minlength=codes.shape[1] + 1).tolist()
    out['mean_routed_length'] = float(np.mean(routed['length']))
    out['mean_confidence_per_level'] = [float(v) for v in np.asarray(routed['conf']).mean(0)]
    reach = np.arange(np.asarray(routed['conf']).shape[1])[None] < np.asarray(routed['length'])[:, None]
    per = lambda v: [float(np.asarray(v)[:, l][reach[:, l]].mean()) if reach[:, l].any() else float('nan')
                     for l in range(reach.shape[1])]
    for key, name in (('res_norm', 'residual_norm'), ('sub_norm', 'subtracted_norm'), ('winner', 'winner_weight')):
      if key in routed:
        out[f'mean_{name}_per_level'] = per(routed[key])
    if 'winner' in routed:
      out['mean_winner_weight'] = float(np.asarray(routed['winner'])[reach].mean())
  return out


def slices(train_count: np.ndarray, cold_below: int = 5) -> dict:
  """Boolean [N+1] item masks: 'cold' (< cold_below training interactions) and the popularity thirds."""
  n = len(train_count) - 1
  order = np.lexsort((-np.arange(1, n + 1), -np.asarray(train_count[1:])))   # most popular first, then by id
  third = np.empty(n, np.int64)
  third[order] = np.arange(n) * 3 // n
  out = {'cold': np.concatenate([[False], np.asarray(train_count[1:]) < cold_below])}
  for i, name in enumerate(('pop_head', 'pop_torso', 'pop_tail')):
    out[name] = np.concatenate([[False], third == i])
  return out
