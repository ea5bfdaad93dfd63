"""The run ledger (deres_jax/train/ledger.py): a long table resumes from a fresh checkout.

A job trained with a ledger is recorded there; a new workdir (a fresh machine) restores it
instead of training it again when its config is the same, retrains it when the config
differs, and a broken ledger line is named, not silently dropped."""
import io
import json
import os

import pytest

from deres_jax import config as config_lib
from deres_jax.train import jobs
from deres_jax.train import ledger as ledger_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(lr=1e-3):
  c = config_lib.load_file(os.path.join(ROOT, 'configs', 'tiny.py'))
  c.optim.learning_rate = lr
  return c


def _fake(calls):
  def train(config, workdir, dataset=None):
    del dataset
    calls.append(os.path.basename(workdir))
    summary = {'test_auc': config.optim.learning_rate, 'seed': config.seed}
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f)
    return summary
  return train


def test_a_fresh_workdir_restores_finished_runs_from_the_ledger(tmp_path):
  ledger = str(tmp_path / 'results' / 'table.runs.jsonl')
  job_list = [jobs.Job(n, _config(lr)) for n, lr in (('a', 0.1), ('b', 0.2))]
  calls = []
  jobs.run(job_list[:1], str(tmp_path / 'wd1'), _fake(calls), dataset=object(), out=io.StringIO(),
           ledger=ledger)
  assert calls == ['a']
  lines = open(ledger).read().splitlines()
  assert len(lines) == 1 and json.loads(lines[0])['summary'] == {'test_auc': 0.1, 'seed': 0}
  # Another machine: a new, empty workdir. 'a' is restored (not trained), 'b' trains.
  calls.clear()
  out = io.StringIO()
  results = jobs.run(job_list, str(tmp_path / 'wd2'), _fake(calls), dataset=object(), out=out,
                     ledger=ledger)
  assert calls == ['b']
  assert [r.status for r in results] == ['done before', 'trained']
  assert results[0].summary == {'test_auc': 0.1, 'seed': 0}
  assert 'restored from the run ledger' in out.getvalue()
  assert json.loads((tmp_path / 'wd2' / 'a' / 'summary.json').read_text()) == {'test_auc': 0.1, 'seed': 0}
  assert sorted(ledger_lib.load(ledger)) == ['a', 'b']


def test_a_changed_config_is_retrained_and_logging_fields_are_not_a_change(tmp_path):
  ledger = str(tmp_path / 'x.runs.jsonl')
  calls = []
  jobs.run([jobs.Job('a', _config(0.1))], str(tmp_path / 'wd1'), _fake(calls), dataset=object(),
           out=io.StringIO(), ledger=ledger)
  quieter = _config(0.1)
  quieter.train.log_every = 7          # never changes what a run computes
  quieter.ckpt.every_steps = 3
  assert ledger_lib.fingerprint(quieter) == ledger_lib.fingerprint(_config(0.1))
  calls.clear()
  jobs.run([jobs.Job('a', quieter)], str(tmp_path / 'wd2'), _fake(calls), dataset=object(),
           out=io.StringIO(), ledger=ledger)
  assert calls == []
  other = _config(0.1)
  other.seed = 5
  assert ledger_lib.fingerprint(other) != ledger_lib.fingerprint(_config(0.1))
  out = io.StringIO()
  jobs.run([jobs.Job('a', other)], str(tmp_path / 'wd3'), _fake(calls), dataset=object(), out=out,
           ledger=ledger)
  assert calls == ['a'] and 'trained with another config' in out.getvalue()
  assert ledger_lib.load(ledger)['a']['summary']['seed'] == 5   # replaced by the new run


def test_runs_finished_before_the_ledger_are_added_to_it(tmp_path):
  calls = []
  job = jobs.Job('a', _config(0.3))
  jobs.run([job], str(tmp_path / 'wd'), _fake(calls), dataset=object(), out=io.StringIO())
  ledger = str(tmp_path / 'x.runs.jsonl')
  jobs.run([job], str(tmp_path / 'wd'), _fake(calls), dataset=object(), out=io.StringIO(), ledger=ledger)
  assert calls == ['a'] and ledger_lib.load(ledger)['a']['summary']['test_auc'] == 0.3


def test_a_broken_ledger_line_is_named(tmp_path):
  path = tmp_path / 'x.runs.jsonl'
  path.write_text('{"name": "a", "fingerprint": "f", "summary": {}}\n<<<<<<< HEAD\n')
  with pytest.raises(ValueError, match=r'x.runs.jsonl, line 2: not a ledger entry'):
    ledger_lib.load(str(path))
  assert ledger_lib.beside('results/main_synthetic.md') == 'results/main_synthetic.runs.jsonl'


def test_a_run_of_another_config_in_the_workdir_is_not_put_in_the_ledger(tmp_path):
  calls = []
  jobs.run([jobs.Job('a', _config(0.3))], str(tmp_path / 'wd'), _fake(calls), dataset=object(),
           out=io.StringIO())
  # The trainer writes the run's config.json; here the run was of another learning rate.
  (tmp_path / 'wd' / 'a' / 'config.json').write_text(_config(0.5).to_json_best_effort())
  ledger = str(tmp_path / 'x.runs.jsonl')
  jobs.run([jobs.Job('a', _config(0.3))], str(tmp_path / 'wd'), _fake(calls), dataset=object(),
           out=io.StringIO(), ledger=ledger)
  assert ledger_lib.load(ledger) == {}
  assert ledger_lib.fingerprint(json.loads(_config(0.3).to_json_best_effort())) == ledger_lib.fingerprint(_config(0.3))


def test_two_writers_sharing_a_ledger_keep_each_others_runs(tmp_path):
  """Two table processes (e.g. --rows split over two cores) load the ledger before either has
  recorded; each then records its own run. The file must end up with both."""
  ledger = str(tmp_path / 'table.runs.jsonl')
  first, second = ledger_lib.load(ledger), ledger_lib.load(ledger)
  ledger_lib.record(ledger, first, 'a/seed0', _config(0.1), {'test_auc': 0.1}, 1.0)
  ledger_lib.record(ledger, second, 'b/seed0', _config(0.2), {'test_auc': 0.2}, 2.0)
  on_disk = ledger_lib.load(ledger)
  assert sorted(on_disk) == ['a/seed0', 'b/seed0']
  assert on_disk['a/seed0']['summary'] == {'test_auc': 0.1}
  assert 'a/seed0' in second   # the writer's own view now has the other's run too


def test_a_run_another_table_trained_with_the_same_config_is_borrowed(tmp_path):
  """The ablation table's DeRes row is the main table's: a job whose exact config (seed
  included) is in a sibling ledger of the same folder is restored from it, not trained, and
  recorded in its own ledger under its own name; a different seed still trains."""
  main = str(tmp_path / 'results' / 'main.runs.jsonl')
  jobs.run([jobs.Job('deres/seed0', _config(0.1))], str(tmp_path / 'wd_main'), _fake([]),
           dataset=object(), out=io.StringIO(), ledger=main)
  ablation = str(tmp_path / 'results' / 'ablation.runs.jsonl')
  other_seed = _config(0.1)
  other_seed.seed = 1
  calls, out = [], io.StringIO()
  results = jobs.run([jobs.Job('deres_gated/seed0', _config(0.1)), jobs.Job('deres_gated/seed1', other_seed)],
                     str(tmp_path / 'wd_abl'), _fake(calls), dataset=object(), out=out, ledger=ablation)
  assert calls == ['seed1']
  assert results[0].summary == {'test_auc': 0.1, 'seed': 0}
  assert 'same config as deres/seed0 in main.runs.jsonl' in out.getvalue()
  assert sorted(ledger_lib.load(ablation)) == ['deres_gated/seed0', 'deres_gated/seed1']
  # a sibling that does not parse is skipped, not fatal for this table
  (tmp_path / 'results' / 'broken.runs.jsonl').write_text('not json\n')
  assert set(ledger_lib.siblings(ablation)) == {ledger_lib.fingerprint(_config(0.1))}


def test_a_field_added_at_its_neutral_value_keeps_fingerprints_and_resumes(tmp_path):
  """Adding a config field whose default reproduces the old runs invalidates neither a ledger
  entry nor a resume: an old config.json (without the field) and the new config agree."""
  from deres_jax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  new = _config()
  old = json.loads(new.to_json_best_effort())
  del old['zoo_connector']                       # a run recorded before the field existed
  assert new.zoo_connector == workdir_lib.ADDED_FIELDS['zoo_connector']
  assert ledger_lib.fingerprint(old) == ledger_lib.fingerprint(new)
  assert workdir_lib.config_changes(old, json.loads(new.to_json_best_effort())) == []
  os.makedirs(tmp_path / 'w')
  with open(tmp_path / 'w' / 'config.json', 'w') as f:
    json.dump(old, f)
  workdir_lib.check_config(str(tmp_path / 'w'), new)     # resumes: no ConfigError
  # A non-neutral value is a different run, for the ledger and for a resume.
  other = _config()
  other.zoo_connector = 'prenorm'
  assert ledger_lib.fingerprint(other) != ledger_lib.fingerprint(old)
  workdir_lib.check_config(str(tmp_path / 'w'), other)  # zoo_* act at build time: a resume may change them
  other = _config()
  other.optim.embed_l2_prior = 3.0
  assert ledger_lib.fingerprint(other) != ledger_lib.fingerprint(old)
  with pytest.raises(config_lib.ConfigError, match='embed_l2_prior'):
    workdir_lib.check_config(str(tmp_path / 'w'), other)
  # An entry recorded while the field was hashed even at its neutral value still matches.
  legacy = ledger_lib._hash({k: v for k, v in workdir_lib._flatten(json.loads(new.to_json_best_effort())).items()
                             if not k.startswith(ledger_lib.IGNORED)})
  assert legacy != ledger_lib.fingerprint(new) and legacy in ledger_lib.fingerprints(new)
  entry, why = ledger_lib.lookup({'a': {'name': 'a', 'fingerprint': legacy, 'summary': {}}}, 'a', new)
  assert entry is not None and why == ''


def test_every_added_field_is_registered_with_its_current_default():
  """ADDED_FIELDS' values must be the defaults (else a fresh config would not match old runs)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  from deres_jax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  base = config_lib.base_config()
  for key, neutral in workdir_lib.ADDED_FIELDS.items():
    if key.startswith('model.'):
      field = key.split('.', 1)[1]
      having = [m for m in models.MODELS.values() if dataclasses.is_dataclass(m) and
                field in {f.name for f in dataclasses.fields(m)}]
      assert having, f'{key}: no model has this field'
      for m in having:
        assert {f.name: f.default for f in dataclasses.fields(m)}[field] == neutral, (key, m)
    else:
      assert base[key] == neutral, key
