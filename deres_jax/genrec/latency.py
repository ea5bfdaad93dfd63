"""Back-to-back decoding latency of the genrec table's finished rows (genrec/table.py).

Latencies measured while each row trained saw different loads of a shared machine, so the table
re-times every row at the end: each row's retriever is rebuilt over its own tokenizer, trie and
BPE merges from its workdir, with its trained weights (the parameters its test split was scored
with). The beam search stops when every beam has ended, so for variable-length IDs (CAPSID, BPE)
the cost depends on the weights; a row without a checkpoint is timed with random weights and
named in the log. Every system decodes the same first `eval.batch_size` test users once per round
and the rows alternate within each round, so a change of load hits all of them.

COST_BEAM is the beam of the CAPSID paper's cost comparison (research/capsid.md §9.4: decoding
cost relative to TIGER at beam 50); PAPER_COST holds its figures. A run restored from the run
ledger (train/ledger.py) has no weights here: it is not timed again and keeps its last timing.
"""
import os

import numpy as np

COST_BEAM = 50
PAPER_COST = {'capsid': 1.05, 'capsid_bpe': 1.08, 'cobra': 2.10}   # x TIGER at beam 50, Beauty


def has_weights(workdir: str) -> bool:
  """Whether a run's workdir holds trained weights (a best or a regular checkpoint)."""
  from deres_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  return any(ckpt_lib.has_checkpoints(os.path.join(workdir, d)) for d in ('best', 'checkpoints'))


def latency_pass(rows: dict, rounds: int, beams=(0,)) -> dict:
  """{beam: {row: median decoding ms per user}} for `rows` = {row: (config, seed-0 workdir)}.

  A beam of 0 decodes at each row's own `eval.beam_size`; SASRec scores every item whatever the
  beam. The data, tokenizers and trained weights are loaded once per row for all beams; each beam
  builds its own retriever (the beam width is part of the compiled search).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from deres_jax.genrec import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.genrec import tasks as tasks_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.serving import from_workdir  # pylint: disable=g-import-not-at-top
  from deres_jax.train import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  if not rows:
    return {b: {} for b in beams}
  c0 = next(iter(rows.values()))[0]
  data = data_lib.load(c0.data.path, c0.data.dataset, c0.data.max_len)
  sids, weights, out = {}, {}, {}
  for beam in beams:
    tasks = {}
    for key, (config, wd) in rows.items():
      c = config.copy_and_resolve_references()
      if beam:
        c.eval.beam_size = beam
      if c.system == 'sasrec':
        task = tasks_lib.SASRecTask(c, data)
      else:
        if key not in sids:
          sids[key] = tasks_lib.tokenizer_stage(c, data, wd)[0]
        cls = tasks_lib.CobraTask if c.system == 'cobra' else tasks_lib.TigerTask
        task = cls(c, data, sids[key], wd)
      if key not in weights:
        weights[key] = task.init(jax.random.PRNGKey(0))
        try:
          _, weights[key] = from_workdir.restore_checkpoint(wd, c, ckpt_lib.abstract(weights[key]))
        except from_workdir.WorkdirError:
          print(f'latency: {key} has no checkpoint; timed with random weights', flush=True)
      users = np.arange(min(c.eval.batch_size, len(data.users)))
      task.ranks(weights[key], 'test', users)   # compiles
      tasks[key] = (task, users)
    times = {k: [] for k in tasks}
    for _ in range(rounds):
      for key, (task, users) in tasks.items():
        task.latency_ms = []
        task.ranks(weights[key], 'test', users)
        times[key] += task.latency_ms
    out[beam] = {k: float(np.median(v)) for k, v in times.items()}
    print(f'back-to-back decoding ms/user (beam {beam or c0.eval.beam_size}): '
          + ', '.join(f'{k} {v:.2f}' for k, v in out[beam].items()), flush=True)
  return out
