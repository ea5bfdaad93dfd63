"""The scaling fitter (deres_jax/scaling/fit.py): power law, log-linear form, bootstrap, matching."""
import numpy as np
import pytest

from deres_jax.scaling import fit

COMPUTE = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
REF_AUC = 0.70


def _aucs(a, gamma, compute=COMPUTE, ref=REF_AUC):
  """AUCs whose relative gain over `ref` (eq. 1) is exactly a·C^γ (eq. 2)."""
  return ref * (1.0 + a * compute ** gamma / 100.0)


@pytest.mark.parametrize('a,gamma', [(0.8, 0.118), (2.5, 0.071), (0.05, 0.5)])
def test_power_law_recovers_noiseless_parameters(a, gamma):
  fits = fit.fit_curves({'m': (COMPUTE, [np.array([x, x]) for x in _aucs(a, gamma)])}, [REF_AUC],
                        num_bootstrap=50)
  f = fits['m']
  assert f['gamma'] == pytest.approx(gamma, abs=1e-9)
  assert f['a'] == pytest.approx(a, rel=1e-9)
  assert f['r2'] == pytest.approx(1.0, abs=1e-12)
  # Identical seeds: every bootstrap replicate is the same fit, so the interval is a point.
  assert f['gamma_ci'][0] == pytest.approx(gamma, abs=1e-9)
  assert f['gamma_ci'][1] == pytest.approx(gamma, abs=1e-9)


def test_absolute_delta_and_log_linear_slope():
  # 100·AUC = 68 + 1.5·log10 C exactly: s = 1.5 AUC points per decade, b = 68 (eq. 3).
  auc = (68.0 + 1.5 * np.log10(COMPUTE)) / 100.0
  b, s = fit.log_linear(COMPUTE, auc)
  assert (b, s) == (pytest.approx(68.0), pytest.approx(1.5))
  # Absolute ΔAUC over 0.66 is 2 + 1.5·log10 C points: a power law only approximately.
  np.testing.assert_allclose(fit.delta_auc(auc, 0.66, 'absolute'), 2.0 + 1.5 * np.log10(COMPUTE))


def test_noisy_intervals_cover_the_truth_in_most_replicates():
  """100 noisy sweeps (6 compute points × 5 seeds, AUC noise sd 1e-3 on the model and the
  reference): the 95 % bootstrap intervals of γ and a contain the true values in most of them."""
  a, gamma, sd, seeds = 1.0, 0.12, 1e-3, 5
  rng = np.random.default_rng(0)
  truth = _aucs(a, gamma)
  cover_g = cover_a = 0
  estimates = []
  for rep in range(100):
    samples = [t + sd * rng.standard_normal(seeds) for t in truth]
    ref = REF_AUC + sd * rng.standard_normal(seeds)
    f = fit.fit_curves({'m': (COMPUTE, samples)}, ref, num_bootstrap=400, seed=rep)['m']
    cover_g += f['gamma_ci'][0] <= gamma <= f['gamma_ci'][1]
    cover_a += f['a_ci'][0] <= a <= f['a_ci'][1]
    estimates.append(f['gamma'])
  assert cover_g >= 80, cover_g
  assert cover_a >= 80, cover_a
  assert np.mean(estimates) == pytest.approx(gamma, abs=0.01)  # the point estimate is unbiased-ish


def test_points_without_a_positive_gain_are_left_out():
  delta = 0.5 * COMPUTE ** 0.2
  delta[0] = -0.1  # the smallest model is worse than the reference: log ΔAUC does not exist
  a, gamma = fit.power_law(COMPUTE, delta)
  assert gamma == pytest.approx(0.2) and a == pytest.approx(0.5)
  a, gamma = fit.power_law(COMPUTE[:2], np.array([-1.0, 0.3]))
  assert np.isnan(a) and np.isnan(gamma)  # one usable point is no fit


def test_compute_matching_hand_case():
  # A: ΔAUC = 1·C^0.5, B: ΔAUC = 0.5·C^0.5. B at C_B = 16 gains 2; A gains 2 at C = 4: ρ = 0.25.
  assert fit.match_power_law(1.0, 0.5, 0.5, 0.5, 16.0) == pytest.approx(0.25)
  # Log-linear: A 70 + 2·log10 C, B 69 + 2·log10 C; B at C_B = 100 has 73; A has 73 at 10^1.5.
  assert fit.match_log_linear(70.0, 2.0, 69.0, 2.0, 100.0) == pytest.approx(10 ** 1.5 / 100)
  # A that does not improve with compute never reaches B: no ratio.
  assert np.isnan(fit.match_power_law(1.0, -0.1, 0.5, 0.5, 16.0))


def test_compute_matching_on_fitted_curves_with_interval():
  """The same hand case through fit_curves and match: A = 1·C^0.5, B = 0.5·C^0.5 (relative
  ΔAUC in %), two noiseless seeds per point; ρ = (0.5)^(1/0.5) = 0.25 at every point of B."""
  c = np.array([1.0, 4.0, 16.0, 64.0])
  curves = {'A': (c, [np.array([x, x]) for x in _aucs(1.0, 0.5, c)]),
            'B': (c, [np.array([x, x]) for x in _aucs(0.5, 0.5, c)])}
  fits = fit.fit_curves(curves, [REF_AUC, REF_AUC], num_bootstrap=20)
  rows = fit.match(fits, 'A', 'B')
  assert [r['compute_b'] for r in rows] == list(c)
  for r in rows:
    assert r['ratio'] == pytest.approx(0.25)
    assert r['ratio_ci'] == (pytest.approx(0.25), pytest.approx(0.25))
  # C_A* = 0.25 and 1 are below / at the edge of A's range [1, 64]: the first is extrapolated.
  assert [r['extrapolated'] for r in rows] == [True, False, False, False]
  # The other way round, B needs 4× A's compute.
  assert fit.match(fits, 'B', 'A')[1]['ratio'] == pytest.approx(4.0)
  diff = fit.compare_exponents(fits, 'A', 'B')
  assert diff['gamma_diff'] == pytest.approx(0.0, abs=1e-9)


def test_noisy_matching_interval_covers_the_true_ratio():
  """A = 1.2·C^0.15, B = 0.6·C^0.1 with AUC noise: ρ at B's largest point is inside its interval."""
  rng = np.random.default_rng(1)
  c = np.array([1.0, 3.0, 10.0, 30.0, 100.0])
  truth = fit.match_power_law(1.2, 0.15, 0.6, 0.1, 100.0)
  covered = 0
  for rep in range(30):
    curves = {m: (c, [t + 1e-3 * rng.standard_normal(4) for t in _aucs(a, g, c)])
              for m, (a, g) in {'A': (1.2, 0.15), 'B': (0.6, 0.1)}.items()}
    fits = fit.fit_curves(curves, REF_AUC + 1e-3 * rng.standard_normal(4), num_bootstrap=300,
                          seed=rep)
    lo, hi = fit.match(fits, 'A', 'B')[-1]['ratio_ci']
    covered += lo <= truth <= hi
  assert covered >= 24, covered


def test_bootstrap_means_resample_within_each_point():
  rng = np.random.default_rng(0)
  means = fit.bootstrap_means([np.array([1.0, 3.0]), np.array([5.0])], 2000, rng)
  assert means.shape == (2000, 2)
  assert set(np.unique(means[:, 0])) <= {1.0, 2.0, 3.0} and np.all(means[:, 1] == 5.0)
  assert np.mean(means[:, 0] == 2.0) == pytest.approx(0.5, abs=0.05)  # P(one of each) = 1/2
