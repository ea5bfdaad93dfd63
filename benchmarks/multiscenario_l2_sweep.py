"""Test wAUC of multi-scenario models against the embedding L2 prior, on a table preset's recipe.

  python benchmarks/multiscenario_l2_sweep.py --data=amazon --data_path=/work/runs/amz/ms.csv \
      --models=midpg,m2m,shared_bottom,pepnet --priors=0,25,100,400 --seeds=0,1,2 --workdir=/work/runs/ms_probe

Every run is `deres_jax/multiscenario/table.py`'s row config at `--preset` (default
`converged_no_embed_l2`: no embedding L2) with `optim.embed_l2_prior` set to each prior
(lambda = prior / training rows, train/regularization.py). A finished run
(WORKDIR/<model>_prior<p>_s<seed>/summary.json) is read back. Prints one Markdown row per model:
the mean test wAUC over the seeds at each prior (how the `converged` preset's prior of 100 was chosen,
docs/multiscenario.md). A model may carry field overrides, `name:field=value[:field=value...]`
(e.g. `midpg:mi_estimator=none`), to compare variants of one model at a table's recipe:

  python benchmarks/multiscenario_l2_sweep.py --data=synthetic --preset=converged --priors=100 \
      --models=midpg,midpg:mi_estimator=none,shared_bottom --workdir=/work/runs/ms_midpg_probe
"""
import ast
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deres_jax.multiscenario import table  # noqa: E402  pylint: disable=wrong-import-position
from deres_jax.train import jobs  # noqa: E402  pylint: disable=wrong-import-position


def _literal(text: str):
  """A Python literal from the command line (`8`, `0.5`, `(64, 32)`), else the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--data', default='amazon', choices=('amazon', 'synthetic'))
  p.add_argument('--data_path', default='/tmp/amz/ms.csv')
  p.add_argument('--preset', default='converged_no_embed_l2')
  p.add_argument('--models', default='midpg,m2m,shared_bottom,pepnet')
  p.add_argument('--priors', default='0,25,100,400')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--workdir', default='/tmp/ms_l2_sweep')
  a = p.parse_args()
  names = a.models.split(',')
  priors = [float(x) for x in a.priors.split(',')]

  def job(name, prior, seed):
    model, *fields = name.split(':')
    c = table.table_config(model, seed, a.preset, a.data, a.data_path)
    for field in fields:
      key, _, value = field.partition('=')
      if key not in c.model:
        raise SystemExit(f'--models: {model!r} has no field {key!r} (in {name!r}); its fields are {sorted(c.model)}.')
      c.model[key] = _literal(value)
    c.optim.update(embed_l2=0.0, embed_l2_prior=prior)
    return jobs.Job(f'{name.replace(":", "-")}_prior{prior:g}_s{seed}', c)

  job_list = [job(n, x, int(k)) for k in a.seeds.split(',') for n in names for x in priors]
  results = jobs.run(job_list, a.workdir, describe=lambda s: f"test wAUC {s['test']['wauc']:.4f}")
  wauc = {}
  for r in results:
    if r.summary is not None:
      wauc.setdefault(r.job.name.rsplit('_s', 1)[0], []).append(r.summary['test']['wauc'])
  print(f'\nMean test wAUC over seeds {a.seeds} ({a.data}, preset {a.preset} + the prior):\n')
  print('| model | ' + ' | '.join(f'prior {x:g}' for x in priors) + ' |')
  print('|---|' + '---:|' * len(priors))
  for name in names:
    cells = [wauc.get(f'{name.replace(":", "-")}_prior{x:g}') for x in priors]
    print(f'| {name} | ' + ' | '.join(f'{np.mean(v):.4f}' if v else '–' for v in cells) + ' |')


if __name__ == '__main__':
  main()
