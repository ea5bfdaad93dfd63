"""Compute–AUC scaling study: sweep depth × width per model, fit power laws, plot (docs/scaling.md).

  python launch/scaling.py --config=configs/scaling/synthetic.py --workdir=/tmp/scaling_synthetic \
      --models=deres,onetrans,prenorm --out=results/scaling_synthetic.md

Trains every point of config.scaling (depths × widths × seeds per model, and the reference)
as a normal run in WORKDIR/<point>, skipping finished ones (rerun the same command to resume),
then fits ΔAUC = a·C^γ and the log-linear form with bootstrap intervals over seeds, matches
compute between the config.scaling.pairs, and writes the markdown report (--out) and its plot
(PNG and SVG beside it). `--config.model.*` flags apply to every point; `--config.scaling.*`
flags change the sweep (e.g. --config.scaling.depths='(2,4,8,16)').

A long sweep can be reported before it ends: `--max_minutes=-1` trains nothing and writes the
report of the finished points (those in WORKDIR or in the run ledger beside --out), its first
line saying how many of the sweep's points are done and which models are not fitted yet.
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from deres_jax import cli
from deres_jax.train import ledger as ledger_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Scaling config (configs/scaling/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory of the sweep: one workdir per point, '
                               'records.json, fit.json.')
_MODELS = flags.DEFINE_string('models', '', 'Comma-separated scaling models (deres, onetrans, '
                              'prenorm, attnres, onetrans_deres or any model name); default '
                              'config.scaling.models.')
_OUT = flags.DEFINE_string('out', '', 'Markdown report (default WORKDIR/scaling.md); the plot is '
                           'written beside it with the same name, .png and .svg.')
_MAX_MINUTES = flags.DEFINE_float('max_minutes', 0.0, 'Start no new point after this many minutes '
                                   '(0: train them all); -1: train nothing, report the finished points.')
_PLOT = flags.DEFINE_bool('plot', True, 'Write the plot (needs matplotlib, the plot extra).')
flags.mark_flags_as_required(['config', 'workdir'])

_MODEL_FLAGS = []  # (field, text) pairs of --config.model.* flags, see config.split_model_flags


def main(argv):
  cli.started()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported here so that flag errors (a mistyped --config.key) come before JAX starts.
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import data  # pylint: disable=g-import-not-at-top
  from deres_jax.scaling import plot, report, runs  # pylint: disable=g-import-not-at-top
  from deres_jax.train import checkpoint, trainer  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  config = _CONFIG.value
  variants = [v for v in (_MODELS.value or config.get('scaling', {}).get('models', '')).split(',') if v]
  out = _OUT.value or os.path.join(_WORKDIR.value, 'scaling.md')
  command = ' '.join(['python', 'launch/scaling.py'] +
                     [a for a in sys.argv[1:] if not a.startswith('--max_minutes')])
  start = time.perf_counter()
  try:
    # A report named with --out keeps its finished points in a run ledger beside it
    # (results/x.runs.jsonl, deres_jax/train/ledger.py): the sweep resumes without its workdir.
    records = runs.run(config, _WORKDIR.value, variants, model_flags=_MODEL_FLAGS,
                       ledger=ledger_lib.beside(out) if _OUT.value else None,
                       max_minutes=_MAX_MINUTES.value)
    result = report.analyse(config, records, variants,
                            expected=runs.points(config.scaling, variants))
  except (config_lib.ConfigError, runs.ScalingError, data.DataMissingError,
          checkpoint.CheckpointError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except trainer.Preempted as e:
    sys.exit(e.code)
  with open(os.path.join(_WORKDIR.value, 'fit.json'), 'w') as f:
    json.dump(report.fit_json(result), f, indent=2)
  # A partial sweep with no model fitted yet has nothing to plot.
  plot_prefix = os.path.splitext(out)[0] if _PLOT.value and result['fits'] else ''
  plot_error = ''
  if plot_prefix:
    try:
      plot.plot(result['fits'], result['curves'], result['ref_auc'], plot_prefix,
                kind=result['scaling']['delta'], unit_name=result['scaling']['compute_unit_name'],
                reference=result['scaling']['reference'], title=f'Compute–AUC scaling ({out})')
    except ImportError as e:
      plot_error = str(e)
      plot_prefix = ''
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    f.write(report.markdown(result, command, plot_prefix, out, time.perf_counter() - start))
  print(f'\n{report.summary_text(result)}\nReport: {out}' +
        (f'; plot: {plot_prefix}.png, {plot_prefix}.svg' if plot_prefix else ''), flush=True)
  if plot_error:
    print(f'error: {plot_error}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  cli.run(main, _MODEL_FLAGS)
