"""Training curves of one or several runs on shared axes (training loss, validation AUC/logloss).

  python launch/plot.py /tmp/quickstart --out=curves.png
  python launch/plot.py /tmp/q_deres /tmp/q_prenorm --out=compare.png --title="DeRes vs PreNorm"
"""
import sys

from absl import app
from absl import flags

_OUT = flags.DEFINE_string('out', 'curves.png', 'Image to write (.png, .pdf, .svg).')
_TITLE = flags.DEFINE_string('title', '', 'Figure title.')
_LABELS = flags.DEFINE_list('labels', None, 'Legend labels, one per workdir (default: directory, model, test AUC).')


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError('name at least one WORKDIR')
  if _LABELS.value and len(_LABELS.value) != len(workdirs):
    raise app.UsageError(f'--labels has {len(_LABELS.value)} labels for {len(workdirs)} workdirs')
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("error: plotting needs matplotlib: pip install -e '.[plot]'", file=sys.stderr)
    sys.exit(2)
  matplotlib.use('Agg')  # files only: no display needed
  from deres_jax import plotting  # pylint: disable=g-import-not-at-top
  try:
    fig = plotting.plot_runs(workdirs, _LABELS.value, _TITLE.value)
    plotting.save(fig, _OUT.value)
  except (plotting.NoMetricsError, ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'wrote {_OUT.value} ({len(workdirs)} run{"s" if len(workdirs) > 1 else ""})')


if __name__ == '__main__':
  app.run(main)
