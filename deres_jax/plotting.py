"""Training curves of one or several runs on shared axes (`launch/plot.py`, the notebooks).

Reads WORKDIR/metrics.jsonl (one JSON object per logged step, `trainer.MetricWriter`) and
draws `train/loss` and the validation curve of each run's `eval.monitor` (from config.json:
`eval/auc` for CTR, `eval/wauc` for multi-scenario, `eval/recall@10` for generative retrieval),
plus `eval/logloss` where runs log it, against the step, one colour per run, so runs are
compared by looking. A run's label is its directory name with the model (and connector) from
config.json, plus its test value of the monitored metric when summary.json exists.
"""
import json
import os

PANELS = (('train/loss', 'training loss (BCE)'), ('eval/auc', 'validation AUC'),
          ('eval/logloss', 'validation logloss'))  # a CTR run's panels


def _config(workdir: str) -> dict:
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def panels(workdirs, runs) -> list:
  """[(metric, title)]: the training loss, each run's monitored metric, then eval/logloss if logged."""
  families = {_config(w).get('family', 'ctr') for w in workdirs}
  out = [('train/loss', 'training loss' if 'genrec' in families else 'training loss (BCE)')]
  for w in workdirs:
    monitor = _config(w).get('eval', {}).get('monitor', 'auc')
    panel = ('eval/' + monitor, 'validation ' + ('AUC' if monitor == 'auc' else monitor))
    if panel not in out:
      out.append(panel)
  if ('eval/logloss', 'validation logloss') not in out and any('eval/logloss' in r for r in runs):
    out.append(('eval/logloss', 'validation logloss'))
  return out


class NoMetricsError(FileNotFoundError):
  """A directory without metrics.jsonl (not a training workdir, or not started)."""


def read_metrics(workdir: str) -> dict:
  """{metric: ([steps], [values])} from WORKDIR/metrics.jsonl; a torn last line is ignored."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise NoMetricsError(f'{workdir!r} has no metrics.jsonl: not a training workdir, or not started yet')
  out = {}
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:  # a run killed mid-write leaves a partial last line
        continue
      step = record.get('step')
      for k, v in record.items():
        if k != 'step' and isinstance(v, (int, float)):
          steps, values = out.setdefault(k, ([], []))
          steps.append(step)
          values.append(v)
  return out


def run_label(workdir: str) -> str:
  """'<dir> (<model>/<connector>, test AUC x)' from the workdir's config.json and summary.json."""
  label = os.path.basename(os.path.normpath(workdir))
  config = _config(workdir)
  model = config.get('model', {})
  extra = [config.get('system') or model.get('name', '') +
           (f"/{model['connector']}" if model.get('connector') else '')]
  monitor = config.get('eval', {}).get('monitor', 'auc')
  try:
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
    value = summary.get(f'test_{monitor}', (summary.get('test') or {}).get(monitor))
    if isinstance(value, (int, float)):
      extra.append(f'test {"AUC" if monitor == "auc" else monitor} {value:.4f}')
  except (OSError, ValueError):
    pass
  extra = [e for e in extra if e]
  return f'{label} ({", ".join(extra)})' if extra else label


def plot_runs(workdirs, labels=None, title: str = ''):
  """A matplotlib Figure with one panel per metric of `panels`, every run on the same axes.

  Args:
    workdirs: training workdirs (each with metrics.jsonl).
    labels: legend labels (default: `run_label` of each).
    title: the figure title.
  Returns:
    The Figure (in a notebook it displays itself; `save` writes it).
  """
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  workdirs = list(workdirs)
  labels = list(labels) if labels else [run_label(w) for w in workdirs]
  runs = [read_metrics(w) for w in workdirs]
  shown = panels(workdirs, runs)
  fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 3.8), sharex=True, squeeze=False)
  for ax, (key, name) in zip(axes[0], shown):
    for i, (metrics, label) in enumerate(zip(runs, labels)):
      if key in metrics:
        steps, values = metrics[key]
        ax.plot(steps, values, marker='o' if key.startswith('eval/') else None, ms=3, color=f'C{i}',
                label=label)
    ax.set_title(name)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize='small')
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig


def save(fig, path: str, dpi: int = 120):
  """Writes the figure to `path` (format from its extension) atomically."""
  root, ext = os.path.splitext(path)
  tmp = f'{root}.tmp-{os.getpid()}{ext}'
  try:
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
