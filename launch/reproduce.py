"""Reproduces a paper table: trains every row (× seeds) and writes results/<table>_<data>.md.

  python launch/reproduce.py --table=main --data=synthetic --seeds=3
  python launch/reproduce.py --table=ablation --data=criteo --data_path=/data/criteo_x4 --seeds=3
  python launch/reproduce.py --table=multiscenario --data=synthetic --seeds=3

Rerunning the same command resumes: finished rows are read back, not retrained. A table is
either a config file of rows (`configs/tables/*.py`, run by `deres_jax.train.paper_table`)
or a module with `run_table(data, seeds, workdir, out, **options)` and `OPTIONS` (the option
flags it takes: --data_path, --preset, --max_minutes, --rows, --latency_rounds); `--max_minutes=-1`
rewrites a table from the runs finished so far (PARTIAL in its first line, while another
process may still be training the rest; the header names the command without --max_minutes,
which finishes the table); every table trains
through the one job runner (deres_jax/train/jobs.py). Its result file names this command, the
budget and the seeds in its header.
"""
import functools
import importlib
import os
import sys

from absl import app
from absl import flags

from deres_jax import cli

# table name -> module with run_table(data: str, seeds: int, workdir: str, out: str).
TABLES = {
    'main': 'configs/tables/main.py',           # DeRes against twelve baselines (docs/models.md)
    'ablation': 'configs/tables/ablation.py',   # DeRes ablations: paths, identity, SiLU, gate, merge
    'amazon_ctr': 'configs/tables/amazon_ctr.py',  # history-blind vs -aware CTR on Amazon (docs/data.md)
    'multiscenario': 'deres_jax.multiscenario.table',  # MI-DPG against nine baselines (docs/multiscenario.md)
    'genrec': 'deres_jax.genrec.table',  # TIGER, RQ-KMeans, CAPSID(+SemanticBPE), COBRA-style, SASRec (docs/genrec.md)
}

_TABLE = flags.DEFINE_enum('table', None, list(TABLES), 'Which table to reproduce.')
_DATA = flags.DEFINE_string('data', 'synthetic', 'Dataset of the table (the table module lists its choices).')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Training seeds per row (0 .. seeds-1).')
_WORKDIR = flags.DEFINE_string('workdir', '', 'One workdir per row and seed (default /tmp/reproduce_<table>_<data>).')
_DATA_PATH = flags.DEFINE_string('data_path', '', 'Prepared data directory (--data=criteo|avazu|csv).')
_OUT = flags.DEFINE_string('out', '', 'Markdown table (default results/<table>_<data>.md; a .csv beside it).')
# Table options (a table's module lists those it takes in OPTIONS).
_OPTIONS = {
    'data_path': _DATA_PATH,
    'preset': flags.DEFINE_string('preset', '', 'The training budget (default: the table\'s own): '
                                  'genrec cpu_short|tiny (deres_jax/genrec/table.py PRESETS); '
                                  'multiscenario short|converged|converged_no_embed_l2; main/ablation short|converged '
                                  '(configs/tables/main.py).'),
    'max_minutes': flags.DEFINE_float('max_minutes', 0.0, 'Start no new run after this many minutes '
                                      '(0 = no limit; < 0 = only rewrite the table from the finished '
                                      'runs, marked PARTIAL).'),
    'rows': flags.DEFINE_string('rows', '', 'main/ablation/genrec: train only these rows now (comma-'
                                'separated names, slugs or genrec row keys, e.g. mhc); the table lists '
                                'every row, the others read back when finished, else "not run yet".'),
    'latency_rounds': flags.DEFINE_integer('latency_rounds', 5, 'genrec: back-to-back decoding latency rounds '
                                           '(0 = off).'),
}
flags.mark_flags_as_required(['table'])


def main(argv):
  cli.started()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _SEEDS.value < 1:
    print(f'error: --seeds={_SEEDS.value}: need at least one seed', file=sys.stderr)
    sys.exit(2)
  name, data = _TABLE.value, _DATA.value
  workdir = _WORKDIR.value or f'/tmp/reproduce_{name}_{data}'
  out = _OUT.value or os.path.join('results', f'{name}_{data}.md')
  if TABLES[name].endswith('.py'):  # a config file of rows, run by the paper-table runner
    from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    from deres_jax.train import paper_table  # pylint: disable=g-import-not-at-top
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    table = config_lib.load_table(os.path.join(root, TABLES[name]))
    run_table = functools.partial(paper_table.run_table, table,
                                  command=' '.join(['python', 'launch/reproduce.py'] + [
                                      a for a in sys.argv[1:] if not a.startswith(('--max_minutes', '--rows'))]))
    accepted = paper_table.OPTIONS
  else:
    module = importlib.import_module(TABLES[name])
    run_table, accepted = module.run_table, module.OPTIONS
  # Options are flags, each passed only to the tables that take it (one API for every table).
  given = {k: flag.value for k, flag in _OPTIONS.items() if flags.FLAGS[k].present}
  unused = sorted(set(given) - set(accepted))
  if unused:
    print(f'error: --{unused[0]} does not apply to --table={name} (it takes '
          f'{", ".join("--" + o for o in accepted) or "no options"}).', file=sys.stderr)
    sys.exit(2)
  try:
    run_table(data, _SEEDS.value, workdir, out, **given)
  except ValueError as e:  # an unknown --data for this table, a bad row config
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)

if __name__ == '__main__':
  cli.run(main)
