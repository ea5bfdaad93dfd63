"""genrec/table.py: finished rows are read back, a row that raises is reported as failed, tokenizers are shared."""
import csv
import json
import os

import numpy as np
import pytest

from deres_jax.genrec import table

SLICE = os.path.join(os.path.dirname(__file__), 'data', 'genrec')


def _fake_summary(config, recall):
  test = {m: recall for m in table.METRICS}
  test.update({'tail/users': 80, 'head/users': 320, 'cold/recall@10': 0.01})
  tokenizer = {'diagnostics': {'collision_rate': 0.25, 'utilisation': 0.5, 'gini': 0.3, 'intra_code_similarity': 0.6}}
  return {'system': config.system, 'test': test, 'tokenizer': tokenizer, 'decode_ms_per_user': {'median': 1.0},
          'mean_tokens_per_item': 4.0, 'train_seconds': 1.0, 'num_params': 10}


def test_table_resumes_finished_rows_and_reports_failed_ones(tmp_path):
  calls, broken = [], {'capsid_hard'}
  # The back-to-back latency pass needs real tokenizers: latency_rounds=0.
  options = dict(preset='tiny', data_path=SLICE, latency_rounds=0)

  def fake_run_row(config, workdir, dataset=None, devices=None):   # stands in for run_row
    key = os.path.basename(os.path.dirname(workdir))
    calls.append(key)
    if key in broken:
      raise RuntimeError('routing exploded')
    os.makedirs(os.path.join(workdir, 'tokenizer'), exist_ok=True)
    if not os.path.exists(os.path.join(workdir, 'tokenizer', 'sids.npz')):   # a "fitted" tokenizer
      np.savez(os.path.join(workdir, 'tokenizer', 'sids.npz'), fitted_by=key)
    summary = _fake_summary(config, 0.1 if key == 'capsid_bpe' else 0.05)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
    return summary

  out = str(tmp_path / 'genrec_beauty.md')
  rows = table.run_table('beauty', 1, str(tmp_path / 'runs'), out, train_fn=fake_run_row, **options)
  assert calls == [r.key for r in table.ROWS]
  status = {r['key']: r['status'] for r in rows}
  assert status['capsid_hard'] == 'failed: RuntimeError: routing exploded'
  assert all(v == 'done' for k, v in status.items() if k != 'capsid_hard')
  md = open(out).read()
  assert 'failed: RuntimeError: routing exploded' in md and '--preset=tiny' in md
  n = len(table.ROWS)
  assert f'(PARTIAL: rows with every seed: {n - 1} of {n};' in md.splitlines()[0]
  assert '* CAPSID+SemanticBPE R@10 above TIGER-RQ-VAE: 0.1000 vs 0.0500: holds' in md
  # 80 tail users: 8 and 4 tail hits are too few to call the tail gain either way
  assert 'cannot be judged (too few tail hits: 8 and 4 over all seeds, fewer than 20)' in md
  assert ('* Sensitivity to T (R@10, seed 0 of every point): 1 -> 0.0500 (length 4.00, paper 0.0731); '
          '2 -> 0.0500 (length 4.00, paper 0.0789); 3 -> 0.1000 (length 4.00, paper 0.0839); 5 -> 0.0500') in md
  with open(out[:-3] + '.csv') as f:
    assert {r['key']: r['status'] for r in csv.DictReader(f)}['capsid_hard'].startswith('failed')
  # Rows sharing a tokenizer got the fitted one copied, so they did not fit their own.
  for key, src in table.SHARE.items():
    with np.load(str(tmp_path / 'runs' / key / 'seed0' / 'tokenizer' / 'sids.npz')) as z:
      assert str(z['fitted_by']) == src

  # Rerun: finished rows are read back, only the failed row is tried again (and now succeeds).
  calls.clear()
  broken.clear()
  rows = table.run_table('beauty', 1, str(tmp_path / 'runs'), out, train_fn=fake_run_row, **options)
  assert calls == ['capsid_hard'] and all(r['status'] == 'done' for r in rows)
  assert 'PARTIAL' not in open(out).readline()

  # A stored back-to-back measurement (as latency_pass writes it) gives the beam-50 cost column:
  # ms/user at COST_BEAM relative to TIGER over RQ-VAE IDs, with the paper's figure beside it.
  ms = {r.key: 2.0 for r in table.ROWS}
  cost = dict(ms, tiger_rqvae=4.0, capsid_bpe=5.0, cobra=9.0)
  with open(tmp_path / 'runs' / 'latency_back_to_back.json', 'w') as f:
    json.dump({'rounds': 3, 'ms_per_user': ms, 'cost_beam': table.COST_BEAM, 'ms_per_user_cost_beam': cost}, f)
  rows = table.run_table('beauty', 1, str(tmp_path / 'runs'), out, train_fn=fake_run_row, **options)
  by = {r['key']: r for r in rows}
  assert by['capsid_bpe']['cost_vs_tiger_beam50'] == 1.25 and by['tiger_rqvae']['cost_vs_tiger_beam50'] == 1.0
  md = open(out).read()
  assert '| 1.25x [1.08x] |' in md and '| 2.25x [2.10x] |' in md
  assert 'CAPSID+SemanticBPE 1.25x (paper 1.08x), COBRA-style 2.25x (paper 2.10x)' in md
  assert 'cheaper than COBRA-style: holds' in md
  assert "each row's random weights" in md   # a stored file without 'weights' predates trained-weight timing

  # A fresh workdir (another machine): every run comes back from the ledger beside the table;
  # --rows trains only the named row (here: none left to train, so nothing runs).
  calls.clear()
  rows = table.run_table('beauty', 1, str(tmp_path / 'fresh'), out, train_fn=fake_run_row,
                         rows='capsid_bpe', **options)
  assert calls == [] and all(r['status'] == 'done' for r in rows)
  assert os.path.exists(out[:-3] + '.runs.jsonl')


def test_unknown_data_and_preset_are_one_sentence_errors(tmp_path):
  with pytest.raises(ValueError, match='has no genrec table'):
    table.run_table('movies', 1, str(tmp_path), str(tmp_path / 'x.md'))
  with pytest.raises(ValueError, match="--rows: 'capsidd' is not a row of the genrec table"):
    table.run_table('beauty', 1, str(tmp_path), str(tmp_path / 'x.md'), rows='capsid,capsidd')
  with pytest.raises(ValueError, match='is not a genrec table preset'):
    table.run_table('beauty', 1, str(tmp_path), str(tmp_path / 'x.md'), preset='gpu_huge')
  with pytest.raises(ValueError, match="'capsid' is not a row of the genrec table at --preset=cpu_long"):
    table.run_table('beauty', 1, str(tmp_path), str(tmp_path / 'x.md'), preset='cpu_long', rows='capsid')


def _fake_seeded(recalls):
  """A train_fn whose R@10 is recalls[row key][seed] (rows not named: 0.02)."""
  def train(config, workdir, dataset=None, devices=None):
    key = os.path.basename(os.path.dirname(workdir))
    summary = _fake_summary(config, recalls.get(key, [0.02] * 9)[config.seed])
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
    return summary
  return train


def test_platform_preset_has_its_rows_the_popularity_baseline_and_paired_seed_claims(tmp_path):
  """`--preset=cpu_long` (issue 28's platform) trains only SASRec and the two TIGER rows; every
  table has the popularity row on its test users; with 3 seeds claims are paired by seed."""
  recalls = {'tiger_rqvae': [0.050, 0.052, 0.049], 'tiger_rqkmeans': [0.040, 0.047, 0.041]}
  out = str(tmp_path / 'platform.md')
  rows = table.run_table('beauty', 3, str(tmp_path / 'runs'), out, preset='cpu_long', data_path=SLICE,
                         latency_rounds=0, train_fn=_fake_seeded(recalls))
  assert [r['key'] for r in rows] == ['tiger_rqvae', 'tiger_rqkmeans', 'sasrec']
  assert rows[0]['recall@10_by_seed'] == recalls['tiger_rqvae']
  md = open(out).read()
  assert '**ablations**' not in md and 'CAPSID n/a (row not in this preset)' in md
  pop = table.popularity('beauty', SLICE, 0)
  assert 0 <= pop['recall@10'] <= 1
  assert f"| Popularity (training counts, ties by lower id) | – | {pop['recall@5']:.4f}" in md
  assert '| TIGER, RQ-VAE IDs | 0.0648 | ' in md   # the paper's figure beside ours
  # the diagnostics table reads each run's tokenizer block (RQ-VAE: under 'diagnostics')
  assert '| TIGER, RQ-VAE IDs | 25.0 % | 50.0 % | 0.30 | 0.600 | – | 0.0100 |' in md

  # The paired-by-seed test on the full table: CAPSID+SemanticBPE above TIGER on every seed
  # (holds), and against RQ-KMeans IDs a difference that flips sign (not resolved).
  recalls = {'capsid_bpe': [0.060, 0.063, 0.058], 'tiger_rqvae': [0.050, 0.052, 0.049],
             'tiger_rqkmeans': [0.050, 0.070, 0.052]}
  out = str(tmp_path / 'genrec.md')
  rows = table.run_table('beauty', 3, str(tmp_path / 'runs_all'), out, preset='tiny', data_path=SLICE,
                         latency_rounds=0, train_fn=_fake_seeded(recalls))
  md = open(out).read()
  d = np.subtract(recalls['capsid_bpe'], recalls['tiger_rqvae'])
  half = 4.303 * d.std(ddof=1) / np.sqrt(3)
  assert (f'above TIGER-RQ-VAE: 0.0603 vs 0.0503, paired over 3 seeds {d.mean():+.4f} '
          f'[{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]: holds') in md
  assert 'RQ-KMeans: 0.0603 vs 0.0573, paired over 3 seeds +0.0030 [-0.0191, +0.0251]: not resolved' in md


def test_sweep_lines_compare_every_point_over_the_seeds_they_share():
  from deres_jax.genrec import table_report  # pylint: disable=g-import-not-at-top
  by = {'capsid_bpe': {'recall@10_by_seed': [0.02, 0.03, 0.04], 'mean_id_length_by_seed': [4.0, 6.0, 6.0]},
        'capsid_T2': {'recall@10_by_seed': [0.05], 'mean_id_length_by_seed': [5.0]},
        'capsid_T5': {'recall@10_by_seed': [None, 0.01], 'mean_id_length_by_seed': [None, 3.0]}}
  ok = lambda *k: all(x in by and any(v is not None for v in by[x]['recall@10_by_seed']) for x in k)
  lines = table_report._sweeps(by, ok)
  # T5 has no seed 0, so no seed is common to all three points: no line rather than a mixed one.
  assert lines == []
  del by['capsid_T5']
  assert table_report._sweeps(by, ok) == [
      '* Sensitivity to T (R@10, seed 0 of every point): 2 -> 0.0500 (length 5.00, paper 0.0789); '
      '3 -> 0.0200 (length 4.00, paper 0.0839).']


def test_learning_curve_reads_an_earlier_output_back_unchanged(tmp_path, capsys, monkeypatch):
  """benchmarks/genrec_learning_curve.py --keep: a committed curve's runs come back as printed."""
  import sys  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import genrec_learning_curve as lc  # pylint: disable=g-import-not-at-top
  earlier = '\n'.join([
      '| run | step | targets seen (M) | validation recall@10 | validation NDCG@10 |',
      '|---|---:|---:|---:|---:|',
      '| SASRec | 300 | 0.21 | 0.0123 | 0.0066 |',
      '| SASRec | 600 | 0.41 | 0.0152 | 0.0076 |',
      '| TIGER (RQ-VAE IDs) | 2000 | 0.26 | 0.0380 | 0.0174 |',
      '',
      '| run | R@5 | N@5 | R@10 | N@10 | tail/R@10 | head/R@10 | decode ms/user (median) | train s | best step '
      '| test users |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      '| SASRec | 0.0583 | 0.0365 | 0.0806 | 0.0437 | 0.0449 | 0.0908 | 0.1 | 1386 | 3300 | 19,412 |',
      'SASRec: 686.3 targets per step; validation users: all',
      'TIGER (RQ-VAE IDs): 128.0 targets per step; validation users: 1,000 sampled', ''])
  path = tmp_path / 'curve.md'
  path.write_text(earlier)
  kept = lc.read_back(str(path))
  assert list(kept) == ['SASRec', 'TIGER (RQ-VAE IDs)']
  assert kept['SASRec']['curve']['steps'] == [300, 600] and kept['SASRec']['curve']['per_step'] == 686.3
  assert kept['TIGER (RQ-VAE IDs)']['test'] is None   # no test row: not invented
  monkeypatch.setattr(sys, 'argv', ['genrec_learning_curve.py', f'--keep={path}'])
  lc.main()
  assert capsys.readouterr().out == earlier
  (tmp_path / 'other.md').write_text('# not a curve\n')
  with pytest.raises(SystemExit, match='no curve rows'):
    lc.read_back(str(tmp_path / 'other.md'))


def test_a_one_seed_row_is_compared_on_the_seed_both_rows_have():
  """A claim between a 3-seed row and a 1-seed ablation compares seed 0 with seed 0, not the
  3-seed mean with one seed."""
  from deres_jax.genrec import table_report  # pylint: disable=g-import-not-at-top
  row = lambda key, seeds, users=100_000: {
      'key': key, 'system': key, 'seeds_done': sum(x is not None for x in seeds), 'recall@10_by_seed': seeds,
      'recall@10': float(np.mean([x for x in seeds if x is not None])), 'test_users': users}
  lines = table_report.claims([row('capsid_bpe', [0.050, 0.020, 0.020]), row('capsid_hard', [0.030, None, None])])
  hard = [line for line in lines if 'hard' in line]
  # seed 0: 0.050 against 0.030 (holds); the 3-seed mean 0.030 against 0.030 would not.
  assert len(hard) == 1 and '0.0500 vs 0.0300 (seed 0, the one seed both have): holds' in hard[0], lines
