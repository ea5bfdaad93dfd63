"""Compute–AUC scaling fits with bootstrap intervals over seeds, and compute matching (numpy).

research/deres.md §6: recommendation papers fit a power law to the AUC *gain* over a fixed
reference model, which is how exponents near 0.1 arise (RankMixer 0.116, UniMixer 0.13, and
DeRes's reported 0.118 against OneTrans's 0.071). Both readings of the paper are fitted:

  (1) ΔAUC(C) = 100·(AUC(C) − AUC_ref) / AUC_ref        ('relative', % of the reference), or
      ΔAUC(C) = 100·(AUC(C) − AUC_ref)                  ('absolute', AUC points);
  (2) ΔAUC(C) = a·C^γ,  fitted as  log ΔAUC = log a + γ·log C  by least squares;
  (3) 100·AUC(C) = b + s·log10 C: s is AUC points per decade of compute (the log-linear form).

C is compute per example divided by the stated unit (a depends on the unit, γ and s do not).
Compute matching between models A and B, on the fitted curves: the compute A needs to reach
B's fitted ΔAUC at B's compute C_B, and its ratio to C_B,

  (4) C_A* = (a_B·C_B^γ_B / a_A)^(1/γ_A),   ρ = C_A* / C_B      (power law), or
  (4') C_A* = 10^((b_B + s_B·log10 C_B − b_A) / s_A)           (log-linear);

ρ = 0.5 reads "A reaches B's AUC at 0.5× B's compute".

Intervals: a stratified bootstrap over seeds. Each replicate resamples, with replacement, the
seeds of every compute point of every model and of the reference (one reference draw shared by
all models of the replicate, since every ΔAUC is measured against it), averages them, and
refits (2)–(4). 95 % intervals are the 2.5 and 97.5 percentiles of the replicates. With few
seeds the percentile bootstrap is narrower than the truth (it cannot see noise that its seeds
did not show): read intervals from 2 seeds as a lower bound on the uncertainty.
"""
import numpy as np


# ---------------------------------------------------------------- Least squares.

def ols(x, y, mask=None):
  """Least squares y ≈ α + β·x along the last axis, vectorised over the leading axes.

  Args:
    x, y: arrays of the same shape [..., L].
    mask: optional boolean [..., L]: points that take part (False ones are ignored).
  Returns:
    (alpha, beta), each of shape [...]; NaN where fewer than 2 distinct x take part.
  """
  x, y = np.asarray(x, float), np.asarray(y, float)
  m = np.ones(np.broadcast_shapes(x.shape, y.shape), bool) if mask is None else np.asarray(mask)
  m = m & np.isfinite(x) & np.isfinite(y)
  w = m.astype(float)
  n = w.sum(-1)
  with np.errstate(invalid='ignore', divide='ignore'):
    mx = np.where(m, x, 0.0).sum(-1) / n
    my = np.where(m, y, 0.0).sum(-1) / n
    dx = np.where(m, x - mx[..., None], 0.0)
    dy = np.where(m, y - my[..., None], 0.0)
    sxx = (dx * dx).sum(-1)
    beta = (dx * dy).sum(-1) / sxx
    ok = (n >= 2) & (sxx > 1e-12 * np.maximum(1.0, (np.where(m, x, 0.0) ** 2).sum(-1)))
    beta = np.where(ok, beta, np.nan)
    alpha = np.where(ok, my - beta * mx, np.nan)
  return alpha, beta


def delta_auc(auc, ref_auc, kind: str = 'relative'):
  """Eq. (1): the AUC gain over the reference, in % of it ('relative') or in AUC points."""
  auc, ref_auc = np.asarray(auc, float), np.asarray(ref_auc, float)
  if kind == 'relative':
    return 100.0 * (auc - ref_auc) / ref_auc
  if kind == 'absolute':
    return 100.0 * (auc - ref_auc)
  raise ValueError(f"delta kind {kind!r} is not one of ['relative', 'absolute'].")


def power_law(compute, delta):
  """Eq. (2): (a, γ) of ΔAUC = a·C^γ by least squares in log-log space (points with ΔAUC > 0).

  Args:
    compute: C per point [..., L] (in the compute unit), > 0.
    delta: ΔAUC per point [..., L]; points with ΔAUC <= 0 have no logarithm and are left out.
  Returns:
    (a, gamma) of shape [...]; NaN where fewer than 2 points have ΔAUC > 0.
  """
  compute, delta = np.asarray(compute, float), np.asarray(delta, float)
  positive = delta > 0
  with np.errstate(invalid='ignore', divide='ignore'):
    log_a, gamma = ols(np.log(compute), np.log(np.where(positive, delta, 1.0)), positive)
  return np.exp(log_a), gamma


def log_linear(compute, auc):
  """Eq. (3): (b, s) of 100·AUC = b + s·log10 C; s = AUC points per decade of compute."""
  return ols(np.log10(np.asarray(compute, float)), 100.0 * np.asarray(auc, float))


def power_law_curve(a, gamma, compute):
  """ΔAUC = a·C^γ on a grid: [...] parameters × [G] compute -> [..., G]."""
  return np.asarray(a)[..., None] * np.asarray(compute, float) ** np.asarray(gamma)[..., None]


# ---------------------------------------------------------------- Compute matching.

def match_power_law(a_a, gamma_a, a_b, gamma_b, compute_b):
  """Eq. (4): ρ = C_A*/C_B, A's compute to reach B's fitted ΔAUC at C_B over C_B.

  NaN where A does not scale up (γ_A <= 0) or B's fitted gain is not positive.
  """
  a_a, gamma_a, a_b, gamma_b = (np.asarray(v, float) for v in (a_a, gamma_a, a_b, gamma_b))
  target = a_b * compute_b ** gamma_b
  with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
    c_star = np.exp((np.log(target) - np.log(a_a)) / gamma_a)
  return np.where((gamma_a > 0) & (target > 0), c_star / compute_b, np.nan)


def match_log_linear(b_a, s_a, b_b, s_b, compute_b):
  """Eq. (4'): ρ = C_A*/C_B on the log-linear fits; NaN where A's slope is not positive."""
  b_a, s_a, b_b, s_b = (np.asarray(v, float) for v in (b_a, s_a, b_b, s_b))
  target = b_b + s_b * np.log10(compute_b)
  with np.errstate(invalid='ignore', divide='ignore', over='ignore'):
    c_star = 10.0 ** ((target - b_a) / s_a)
  return np.where(s_a > 0, c_star / compute_b, np.nan)


# ---------------------------------------------------------------- Bootstrap.

def bootstrap_means(samples, num: int, rng) -> np.ndarray:
  """Means of seeds resampled with replacement, per point: [num, len(samples)].

  Args:
    samples: one 1-D array per point (its per-seed metric values).
    num: replicates.
    rng: a numpy Generator.
  """
  out = np.empty((num, len(samples)))
  for j, s in enumerate(samples):
    s = np.asarray(s, float)
    out[:, j] = s[rng.integers(0, len(s), size=(num, len(s)))].mean(-1)
  return out


def interval(values, level: float = 0.95):
  """The percentile interval of bootstrap replicates (NaN replicates left out): (lo, hi)."""
  values = np.asarray(values, float)
  values = values[np.isfinite(values)]
  if values.size == 0:
    return (np.nan, np.nan)
  tail = 50.0 * (1.0 - level)
  lo, hi = np.percentile(values, [tail, 100.0 - tail])
  return float(lo), float(hi)


def fit_curves(curves: dict, ref_samples, kind: str = 'relative', num_bootstrap: int = 2000,
               seed: int = 0) -> dict:
  """Fits (2) and (3) per model, with bootstrap replicates over seeds (for intervals and (4)).

  Args:
    curves: {model: (compute [L], [per-seed metric array for each of the L points])}.
    ref_samples: the reference model's per-seed metric values.
    kind: ΔAUC form of eq. (1).
    num_bootstrap: replicates; 0 = point estimates only.
    seed: seed of the resampling.
  Returns:
    {model: fit}, a fit being a dict with 'compute', 'auc' (seed means), 'delta', 'num_seeds',
    'a', 'gamma', 'b', 's', 'r2' (of the log-log fit), 'used' (points with ΔAUC > 0),
    'a_ci', 'gamma_ci', 's_ci' (95 %), and 'boot' (replicates of 'a', 'gamma', 'b', 's').
  """
  rng = np.random.default_rng(seed)
  ref_samples = np.asarray(ref_samples, float)
  ref_boot = bootstrap_means([ref_samples], num_bootstrap, rng)[:, 0]
  out = {}
  for name, (compute, samples) in curves.items():
    compute = np.asarray(compute, float)
    auc = np.array([np.mean(s) for s in samples])
    delta = delta_auc(auc, ref_samples.mean(), kind)
    a, gamma = power_law(compute, delta)
    b, s = log_linear(compute, auc)
    used = delta > 0
    r2 = np.nan
    if used.sum() > 2:  # R² of the log-log fit (1 by construction through 2 points)
      y = np.log(delta[used])
      resid = y - (np.log(a) + gamma * np.log(compute[used]))
      r2 = 1.0 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()
    boot_auc = bootstrap_means(samples, num_bootstrap, rng)
    boot_delta = delta_auc(boot_auc, ref_boot[:, None], kind)
    ba, bg = power_law(np.broadcast_to(compute, boot_delta.shape), boot_delta)
    bb, bs = log_linear(np.broadcast_to(compute, boot_auc.shape), boot_auc)
    out[name] = {
        'compute': compute, 'auc': auc, 'delta': delta, 'num_seeds': [len(x) for x in samples],
        'a': float(a), 'gamma': float(gamma), 'b': float(b), 's': float(s),
        'r2': float(r2), 'used': used,
        'a_ci': interval(ba), 'gamma_ci': interval(bg), 's_ci': interval(bs),
        'valid_replicates': float(np.isfinite(bg).mean()) if num_bootstrap else np.nan,
        'boot': {'a': ba, 'gamma': bg, 'b': bb, 's': bs},
    }
  return out


def match(fits: dict, model_a: str, model_b: str) -> list:
  """Compute matching (4) and (4') of A against each compute point of B, with intervals.

  Returns:
    One dict per point of B: 'compute_b', 'ratio' (power law, eq. 4) and 'ratio_ci',
    'ratio_loglinear' (eq. 4') and 'ratio_loglinear_ci', and 'extrapolated' (C_A* outside
    A's measured compute range, so the ratio leans on the fit beyond its data).
  """
  fa, fb = fits[model_a], fits[model_b]
  lo, hi = fa['compute'].min(), fa['compute'].max()
  rows = []
  for c_b in fb['compute']:
    ratio = float(match_power_law(fa['a'], fa['gamma'], fb['a'], fb['gamma'], c_b))
    boot = match_power_law(fa['boot']['a'], fa['boot']['gamma'], fb['boot']['a'],
                           fb['boot']['gamma'], c_b)
    ratio_ll = float(match_log_linear(fa['b'], fa['s'], fb['b'], fb['s'], c_b))
    boot_ll = match_log_linear(fa['boot']['b'], fa['boot']['s'], fb['boot']['b'], fb['boot']['s'],
                               c_b)
    c_star = ratio * c_b
    rows.append({'compute_b': float(c_b), 'ratio': ratio, 'ratio_ci': interval(boot),
                 'ratio_loglinear': ratio_ll, 'ratio_loglinear_ci': interval(boot_ll),
                 # (a relative tolerance: C_A* at the edge of the range is inside it)
                 'extrapolated': bool(not np.isfinite(c_star) or
                                      not lo * (1 - 1e-9) <= c_star <= hi * (1 + 1e-9))})
  return rows


def compare_exponents(fits: dict, model_a: str, model_b: str) -> dict:
  """γ_A − γ_B and s_A − s_B with bootstrap intervals (same replicates, shared reference)."""
  fa, fb = fits[model_a], fits[model_b]
  return {'gamma_diff': fa['gamma'] - fb['gamma'],
          'gamma_diff_ci': interval(fa['boot']['gamma'] - fb['boot']['gamma']),
          's_diff': fa['s'] - fb['s'], 's_diff_ci': interval(fa['boot']['s'] - fb['boot']['s'])}


def band(fit: dict, grid, level: float = 0.95):
  """Pointwise bootstrap band of the fitted ΔAUC curve on a compute grid: (lo [G], hi [G])."""
  curves = power_law_curve(fit['boot']['a'], fit['boot']['gamma'], grid)
  curves = curves[np.all(np.isfinite(curves), -1)]
  if not len(curves):
    return np.full(len(grid), np.nan), np.full(len(grid), np.nan)
  tail = 50.0 * (1.0 - level)
  return np.percentile(curves, tail, 0), np.percentile(curves, 100.0 - tail, 0)


# ---------------------------------------------------------------- From sweep records.

def from_records(records: list, metric: str = 'test_auc', compute: str = 'train_flops',
                 unit: float = 1.0):
  """Groups deres_jax.scaling.runs records into `fit_curves` inputs.

  Points of a model are its distinct (depth, width) sizes; their seeds are the samples.
  Returns:
    (curves, ref_samples): {model: (compute [L] in `unit`, [seed values per point])}, sorted
    by compute, and the reference's per-seed values.
  Raises:
    ValueError: no finished run of the reference.
  """
  ref = [r[metric] for r in records if 'reference' in r['role']]
  if not ref:
    raise ValueError('no finished run of the reference model; run the sweep first.')
  groups = {}
  for r in records:
    if 'sweep' not in r['role']:
      continue
    key = (r['depth'], r['width'])
    groups.setdefault(r['variant'], {}).setdefault(key, []).append(r)
  curves = {}
  for variant, sizes in groups.items():
    pts = sorted(sizes.values(), key=lambda rs: rs[0][compute])
    curves[variant] = (np.array([rs[0][compute] / unit for rs in pts]),
                       [np.array([r[metric] for r in rs]) for rs in pts])
  return curves, np.array(ref)
