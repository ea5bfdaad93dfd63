"""Scaling plots: AUC gain and AUC against compute on log axes, fitted curves, bootstrap bands.

Left: ΔAUC (eq. 1 of deres_jax/scaling/fit.py) against C, both axes logarithmic, so the power
law (2) is a straight line of slope γ; right: test AUC against C on a log x axis with the
same fit mapped back to AUC. Points are seed means (error bars: the seeds' range), thin markers
single seeds; shaded bands are pointwise 95 % bootstrap bands of the fitted curve.

matplotlib is the optional 'plot' extra (pip install -e '.[plot]'), imported only here.
"""
import numpy as np

from deres_jax.scaling import fit as fit_lib


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("plotting needs matplotlib: pip install -e '.[plot]'.") from None
  matplotlib.use('Agg')  # files only, no display
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def to_auc(delta, ref_auc: float, kind: str):
  """Inverse of eq. (1): the AUC that has gain `delta` over `ref_auc`."""
  delta = np.asarray(delta, float)
  return ref_auc * (1.0 + delta / 100.0) if kind == 'relative' else ref_auc + delta / 100.0


def plot(fits: dict, curves: dict, ref_auc: float, path_prefix: str, *, kind: str = 'relative',
         unit_name: str = 'MFLOPs/example', reference: str = 'reference', title: str = '') -> list:
  """Writes PATH_PREFIX.png and PATH_PREFIX.svg; returns the two paths.

  Args:
    fits: `fit.fit_curves` output.
    curves: its input ({model: (compute, [per-seed values])}), for the single-seed points.
    ref_auc: the reference's mean AUC (the zero of ΔAUC).
    path_prefix: output path without extension.
    kind: ΔAUC form ('relative' or 'absolute').
    unit_name: the compute unit, for the x label.
    reference: the reference's name, for the y label.
    title: figure title.
  """
  plt = _pyplot()
  fig, (ax_d, ax_a) = plt.subplots(1, 2, figsize=(11, 4.4))
  ylabel = f'ΔAUC (% of {reference})' if kind == 'relative' else f'ΔAUC (points over {reference})'
  for i, (name, f) in enumerate(fits.items()):
    color = f'C{i}'
    compute, samples = curves[name]
    lo_c, hi_c = compute.min(), compute.max()
    grid = np.geomspace(lo_c / 1.3, hi_c * 1.3, 64)
    seeds_d = [fit_lib.delta_auc(s, ref_auc, kind) for s in samples]
    err = np.array([[f['delta'][j] - d.min(), d.max() - f['delta'][j]] for j, d in enumerate(seeds_d)]).T
    label = f"{name}: γ={f['gamma']:.3f}" if np.isfinite(f['gamma']) else f'{name}: no fit'
    pos = f['delta'] > 0  # a log axis shows only positive gains
    ax_d.errorbar(compute[pos], f['delta'][pos], yerr=err[:, pos], fmt='o', color=color, label=label,
                  capsize=3)
    ax_a.errorbar(compute, f['auc'], yerr=np.array([[m - s.min(), s.max() - m] for m, s in
                                                   zip(f['auc'], samples)]).T,
                  fmt='o', color=color, label=f"{name}: {f['s']:+.3f} pts/decade", capsize=3)
    for c, s in zip(compute, samples):
      ax_a.plot(np.full(len(s), c), s, '.', color=color, alpha=0.35, ms=4)
    if np.isfinite(f['gamma']):
      curve = fit_lib.power_law_curve(f['a'], f['gamma'], grid)
      lo, hi = fit_lib.band(f, grid)
      ax_d.plot(grid, curve, '-', color=color)
      ax_a.plot(grid, to_auc(curve, ref_auc, kind), '-', color=color)
      if np.all(np.isfinite(lo)):
        ax_d.fill_between(grid, np.maximum(lo, 1e-6), hi, color=color, alpha=0.15, lw=0)
        ax_a.fill_between(grid, to_auc(lo, ref_auc, kind), to_auc(hi, ref_auc, kind), color=color,
                          alpha=0.15, lw=0)
  ax_a.axhline(ref_auc, color='gray', ls=':', lw=1, label=f'{reference} (reference)')
  for ax in (ax_d, ax_a):
    ax.set_xscale('log')
    ax.set_xlabel(f'training compute C ({unit_name})')
    ax.grid(True, which='both', alpha=0.25)
    ax.legend(fontsize=8)
  ax_d.set_yscale('log')
  ax_d.set_ylabel(ylabel)
  ax_d.set_title('power law ΔAUC = a·C^γ (95 % bootstrap band)', fontsize=10)
  ax_a.set_ylabel('test AUC')
  ax_a.set_title('AUC against compute', fontsize=10)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  paths = [f'{path_prefix}.png', f'{path_prefix}.svg']
  fig.savefig(paths[0], dpi=130)
  fig.savefig(paths[1])
  plt.close(fig)
  return paths
