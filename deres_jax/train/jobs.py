"""The one job runner behind paper tables, sweeps and scaling sweeps: train many configs.

`run(jobs, workdir)` is the skeleton they share, with one failure policy:

  1. every job's config is validated by its family before the first one trains (a bad job
     stops the run at once, named, in one sentence);
  2. each job trains in WORKDIR/<job.name> through `trainer.train_and_evaluate` (so each is
     itself resumable: a killed job continues from its checkpoint);
  3. a job whose summary.json exists is read back, not retrained, so rerunning the same
     command resumes a half-finished table or sweep;
  4. a job that raises is recorded in WORKDIR/<name>/failed.json (its reason and traceback),
     reported in the results, and retried on the next run; the others go on. Preemption
     (SIGTERM) and Ctrl-C stop the whole run (the job's checkpoint is saved);
  5. progress lines with the elapsed time and an ETA from the jobs trained so far;
  6. `max_minutes` > 0: jobs not started within that budget are reported as not run (a rerun
     continues with them); < 0: nothing new trains, finished jobs are read back;
  7. `ledger`: a run ledger (train/ledger.py) that outlives the workdir: a job found there with
     the same config is restored, not retrained, and every job trained is added to it.

Tables, sweeps and scaling sweeps only build the job list and write the report from the
returned `Result`s.
"""
import csv
import io
import json
import os
import sys
import time
import traceback
from typing import Any, Callable, NamedTuple

from deres_jax.train import ledger as ledger_lib
from deres_jax.train import workdir as workdir_lib


class Job(NamedTuple):
  """One training run of a table, sweep or scaling sweep."""
  name: str         # its sub-directory of the run's WORKDIR (unique within the run)
  config: Any       # a full config of any family (train/family.py)
  label: str = ''   # how progress lines name it (default: name)


class Result(NamedTuple):
  """What became of a job: `summary` when it finished (now or before), else `error`."""
  job: Job
  status: str                 # 'trained' | 'done before' | 'failed' | 'not run'
  summary: dict | None = None
  error: str | None = None    # one line: the exception's type and message, or why not run
  seconds: float | None = None  # wall seconds of the training, when known


def validate(jobs, num_devices: int | None = None):
  """Validates every job's config with its family; ConfigError names the job."""
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.train import family as family_lib  # pylint: disable=g-import-not-at-top
  names = [j.name for j in jobs]
  if len(set(names)) != len(names):
    raise ValueError(f'job names must be unique, got {names}.')
  for i, job in enumerate(jobs):
    try:
      family_lib.get(job.config).validate(job.config, num_devices=num_devices)
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f'{job.label or job.name} (job {i + 1}/{len(jobs)}): {e}') from None


def run(jobs, workdir: str, train_fn: Callable | None = None, dataset=None,
        describe: Callable[[dict], str] = lambda s: '', on_result: Callable | None = None,
        before: Callable | None = None, max_minutes: float = 0.0, devices=None,
        out=None, ledger: str | None = None, only=None) -> list:
  """Trains (or reads back) every job in order; returns one `Result` per job.

  Args:
    jobs: the `Job`s, in training order.
    workdir: WORKDIR/<job.name> is each job's training workdir.
    train_fn: `trainer.train_and_evaluate` (default) or a stand-in with its signature.
    dataset: a preloaded dataset for every job, or None: loaded by the job's family, once
      for consecutive jobs with the same data section.
    describe: summary -> a short text for the progress line (e.g. 'test AUC 0.7812').
    on_result: called with each `Result` as it comes (e.g. to rewrite a partial table).
    before: called with a job just before it trains (e.g. to copy a finished tokenizer in).
    max_minutes: > 0: jobs not started within this budget are 'not run'; < 0: every job not
      finished before is 'not run' (only the report is rewritten).
    devices: devices of each job's mesh (default: all).
    out: where the progress lines go (default: sys.stdout at call time).
    ledger: path of a run ledger (train/ledger.py), e.g. beside the results file; None: none.
    only: None, or a predicate on a job: jobs it rejects are read back when finished and
      otherwise 'not run' (e.g. train the fast rows of a table first, a slow one later).
  """
  from deres_jax.train import family as family_lib  # pylint: disable=g-import-not-at-top
  if train_fn is None:
    from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
    train_fn = trainer.train_and_evaluate
  out = out or sys.stdout
  validate(jobs, None if devices is None else len(devices))
  os.makedirs(workdir, exist_ok=True)
  entries = ledger_lib.load(ledger) if ledger else {}
  siblings = ledger_lib.siblings(ledger) if ledger else {}
  results, loaded, data_key = [], dataset, None
  start, trained_seconds, trained = time.perf_counter(), 0.0, 0
  n = len(jobs)
  for i, job in enumerate(jobs):
    job_dir = os.path.join(workdir, job.name)
    label = f'[{i + 1}/{n}] {job.label or job.name}'
    summary = _read(os.path.join(job_dir, 'summary.json'))
    why_not = ''
    if summary is None and ledger:
      summary, why_not = _restore(entries, job, job_dir, siblings)
      if summary is not None:
        where = f'another table\'s run ledger: {why_not}' if why_not else f'the run ledger {ledger}'
        print(f'{label}: restored from {where}', file=out, flush=True)
        if why_not:   # borrowed from a sibling ledger: recorded here too, under this job's name
          ledger_lib.record(ledger, entries, job.name, job.config, summary,
                            (_read(os.path.join(job_dir, 'job.json')) or {}).get('seconds'))
        why_not = ''
    elif summary is not None and ledger and job.name not in entries:
      saved = _read(os.path.join(job_dir, 'config.json'))   # trained before the ledger existed:
      if saved is None or ledger_lib.fingerprint(saved) == ledger_lib.fingerprint(job.config):
        ledger_lib.record(ledger, entries, job.name, job.config, summary,  # only with this config
                          (_read(os.path.join(job_dir, 'job.json')) or {}).get('seconds'))
    if summary is not None:
      result = Result(job, 'done before', summary,
                      seconds=(_read(os.path.join(job_dir, 'job.json')) or {}).get('seconds'))
      print(f'{label}: done before, {describe(summary)}'.rstrip(', '), file=out, flush=True)
    elif max_minutes and (max_minutes < 0 or (time.perf_counter() - start) / 60 >= max_minutes):
      result = Result(job, 'not run', error=(
          'not trained yet (this run only rewrote the table, --max_minutes=-1)' if max_minutes < 0
          else f'outside the {max_minutes:g}-minute budget of this run'))
    elif only is not None and not only(job):
      result = Result(job, 'not run', error='not among the rows this run trains')
    else:
      left = sum(not os.path.exists(os.path.join(workdir, j.name, 'summary.json')) and
                 (only is None or only(j)) for j in jobs[i:])
      eta = f', ETA {trained_seconds / trained * left / 60:.1f} min for {left}' if trained else ''
      why = f'; {why_not}' if why_not else ''
      print(f'{label}: training in {job_dir} ({time.perf_counter() - start:.0f} s so far{eta}{why})',
            file=out, flush=True)
      if before is not None:
        before(job)
      if dataset is None:  # consecutive jobs on the same data share one copy
        key = json.dumps(job.config.data.to_dict(), sort_keys=True, default=str)
        if key != data_key:
          loaded = None  # the previous copy is freed before the next one loads
          loaded, data_key = family_lib.get(job.config).load(job.config), key
      result = _train(job, job_dir, train_fn, loaded, devices)
      if ledger and result.summary is not None:
        ledger_lib.record(ledger, entries, job.name, job.config, result.summary, result.seconds)
      trained_seconds, trained = trained_seconds + result.seconds, trained + 1
      how = (f'done in {result.seconds:.0f} s, {describe(result.summary)}'.rstrip(', ')
             if result.summary else f'FAILED after {result.seconds:.0f} s ({result.error})')
      print(f'{label}: {how}', file=out, flush=True)
    results.append(result)
    if on_result is not None:
      on_result(result)
  failed = sum(r.status == 'failed' for r in results)
  not_run = sum(r.status == 'not run' for r in results)
  print(f'{n - failed - not_run}/{n} jobs finished' + (f', {failed} failed (retried on the next run)'
                                                        if failed else '') +
        (f', {not_run} not run' if not_run else '') + f' ({time.perf_counter() - start:.0f} s).',
        file=out, flush=True)
  return results


def _train(job, job_dir, train_fn, dataset, devices) -> Result:
  failed_path = os.path.join(job_dir, 'failed.json')
  t0 = time.perf_counter()
  try:
    kwargs = {} if devices is None else {'devices': devices}
    summary = train_fn(job.config, job_dir, dataset=dataset, **kwargs)
  except Exception as e:  # pylint: disable=broad-except  # a failed job must not stop the others
    seconds = time.perf_counter() - t0
    msg = f'{type(e).__name__}: {e}'.splitlines()[0][:300]
    os.makedirs(job_dir, exist_ok=True)
    workdir_lib.write_json_atomic(failed_path, {'error': msg, 'traceback': traceback.format_exc()})
    return Result(job, 'failed', error=msg, seconds=seconds)
  seconds = time.perf_counter() - t0
  workdir_lib.write_json_atomic(os.path.join(job_dir, 'job.json'), {'seconds': seconds})
  if os.path.exists(failed_path):
    os.remove(failed_path)
  return Result(job, 'trained', summary, seconds=seconds)


def _restore(entries, job, job_dir, siblings=None):
  """(summary, note): a ledger entry (or a sibling ledger's, same config) written back as
  WORKDIR/<name>/summary.json; the note says where a borrowed one came from, or why none."""
  entry, why_not = ledger_lib.lookup(entries, job.name, job.config, siblings)
  if entry is None:
    return None, why_not
  os.makedirs(job_dir, exist_ok=True)
  workdir_lib.write_json_atomic(os.path.join(job_dir, 'summary.json'), entry['summary'])
  workdir_lib.write_json_atomic(os.path.join(job_dir, 'job.json'),
                                {'seconds': entry.get('seconds'), 'from_ledger': True})
  return entry['summary'], why_not


def _read(path: str):
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None  # a torn file (written before writes were atomic): train again


def write_table(out: str, lines: list, rows: list, fieldnames=None):
  """A results table: `out` (markdown, `lines` joined) and its .csv twin of `rows`, each written
  atomically (a table rewritten after every run is never left half written); `fieldnames`
  (default: the first row's keys) picks the CSV columns, other keys are left out."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  workdir_lib.write_text_atomic(out, '\n'.join(lines))
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(fieldnames or rows[0]), extrasaction='ignore')
  w.writeheader()
  w.writerows(rows)
  workdir_lib.write_text_atomic(os.path.splitext(out)[0] + '.csv', buf.getvalue())
