"""The compute sweep of a scaling study: every (model, depth, width, seed) is one training run.

  python launch/scaling.py --config=configs/scaling/synthetic.py --workdir=/tmp/scaling \
      --models=deres,onetrans,prenorm

Compute is varied through depth and width at a fixed data budget: every point trains on the
same data for the same `train.num_steps × train.batch_size` rows, so the only thing that moves
along a curve is the model's size (research/deres.md §6: the paper's "8-layer DeRes ≈ 16-layer
OneTrans" reads as a depth sweep at fixed width). Each point is an ordinary run of
`deres_jax.train.trainer.train_and_evaluate` in WORKDIR/<point name>, its config built by
`deres_jax.train.sweep.trial_config` (the model section exactly as launch/train.py builds it).

The points run through the job runner (train/jobs.py): a point with a summary.json is finished
and is read back, never trained again; an interrupted one resumes from its checkpoint (the
trainer's own resume); a failed one is recorded in its failed.json and retried by the next run.
WORKDIR/<point>/record.json and WORKDIR/records.json hold every finished point's record (FLOPs,
parameters, AUC, logloss, seed, wall time), rewritten after each point.
"""
import json
import os
import sys

import jax

from deres_jax import config as config_lib
from deres_jax.train import jobs
from deres_jax.train import sweep as sweep_lib
from deres_jax.train import trainer
from deres_jax.train import workdir as workdir_lib

# Scaling models: name -> model overrides (texts, as on the command line). Any other name of
# deres_jax.models.MODELS is used as it is (its own defaults).
VARIANTS = {
    'deres': {'model.name': 'transformer', 'model.connector': 'deres'},
    'attnres': {'model.name': 'transformer', 'model.connector': 'attnres'},
    'prenorm': {'model.name': 'transformer', 'model.connector': 'prenorm'},
    'onetrans': {'model.name': 'onetrans'},  # the paper's pre-norm OneTrans
    'onetrans_deres': {'model.name': 'onetrans', 'model.connector': 'deres'},
}

# Forward + backward ≈ 3 × forward: the backward pass costs two matmuls per forward matmul
# (gradients of activations and of weights), as in C ≈ 6N per token (Kaplan et al. 2020).
TRAIN_FLOPS_PER_FORWARD = 3


class ScalingError(ValueError):
  """A scaling sweep that cannot run as asked (a model name, a reference, another workdir)."""


def split_config(config):
  """(training config, scaling section): the config file's `scaling` fields are not training's."""
  if 'scaling' not in config:
    raise ScalingError('the config has no `scaling` section; start from configs/scaling/synthetic.py.')
  train = config.copy_and_resolve_references()
  scaling = train.scaling
  with train.unlocked():
    del train['scaling']
  return train, scaling


def variant_overrides(variant: str) -> dict:
  """The model overrides of a scaling model name ('deres' -> transformer + DeRes connector)."""
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  if variant in VARIANTS:
    return dict(VARIANTS[variant])
  if variant in models.MODELS:
    return {'model.name': variant}
  raise ScalingError(f'unknown scaling model {variant!r}; use one of {sorted(VARIANTS)} or a model '
                     f'name of deres_jax.models.MODELS ({", ".join(sorted(models.MODELS))}).')


def parse_reference(text: str):
  """'logreg' or 'onetrans depth=1 width=16' -> (variant, {'model.depth': '1', ...})."""
  name, *fields = text.split()
  if not name:
    raise ScalingError('config.scaling.reference is empty; name the model ΔAUC is measured against.')
  sizes = {}
  for item in fields:
    key, eq, value = item.partition('=')
    if not eq or not key or not value:
      raise ScalingError(f'config.scaling.reference={text!r}: write fields as key=value, e.g. '
                         "'onetrans depth=1 width=16'.")
    sizes[f'model.{key}'] = value
  return name, sizes


def point_name(variant: str, sizes: dict, seed: int) -> str:
  """'deres_depth4_width16_seed0': the directory of one run (the same for a reference point)."""
  parts = [variant] + [f'{k.split(".")[-1]}{v}' for k, v in sorted(sizes.items())]
  return '_'.join(parts) + f'_seed{seed}'


def points(scaling, variants) -> list:
  """Every run of the sweep: the reference, then depths × widths × seeds per model.

  Returns:
    Dicts {'name', 'variant', 'role' ('sweep' or 'reference'), 'seed', 'overrides'} where the
    overrides are the texts given to `trial_config`. Depths >= scaling.scan_from_depth apply
    their blocks with nn.scan (`model.scan_layers=True`: compile time flat in depth).
  """
  out = []
  for variant in variants:
    base = variant_overrides(variant)
    for depth in scaling.depths:
      for width in scaling.widths:
        sizes = {'model.depth': str(depth), 'model.width': str(width)}
        if scaling.scan_from_depth and depth >= scaling.scan_from_depth:
          sizes['model.scan_layers'] = 'true'
        for seed in scaling.seeds:
          out.append({'name': point_name(variant, sizes, seed), 'variant': variant, 'role': 'sweep',
                      'seed': seed, 'overrides': {**base, **sizes, 'seed': str(seed)}})
  ref, sizes = parse_reference(scaling.reference)
  base = variant_overrides(ref)
  names, refs = {p['name'] for p in out}, []
  for seed in scaling.seeds:
    name = point_name(ref, sizes, seed)
    if name in names:  # the reference is also a point of the sweep: one run serves both
      next(p for p in out if p['name'] == name)['role'] = 'sweep+reference'
      continue
    refs.append({'name': name, 'variant': ref, 'role': 'reference', 'seed': seed,
                 'overrides': {**base, **sizes, 'seed': str(seed)}})
  return refs + out  # the reference first: every fit needs it


def record(point: dict, config, summary: dict, wall_seconds) -> dict:
  """One run's row: sizes, FLOPs per example (training and inference), parameters, metrics."""
  forward = summary['flops_per_example']
  examples = config.train.batch_size * summary['steps']
  return {
      'name': point['name'], 'variant': point['variant'], 'role': point['role'],
      'seed': point['seed'], 'model': config.model.name,
      'connector': config.model.get('connector'), 'depth': config.model.get('depth'),
      'width': config.model.get('width'), 'scan_layers': config.model.get('scan_layers'),
      'inference_flops': forward, 'train_flops': TRAIN_FLOPS_PER_FORWARD * forward,
      'train_flops_total': TRAIN_FLOPS_PER_FORWARD * forward * examples,
      'params': summary['num_params'], 'dense_params': summary['dense_params'],
      'embedding_params': summary['embedding_params'],
      'test_auc': summary['test_auc'], 'test_logloss': summary['test_logloss'],
      'val_auc': summary['val_auc'], 'val_logloss': summary['val_logloss'],
      'oracle_auc': summary.get('oracle_auc'), 'steps': summary['steps'], 'examples': examples,
      'train_seconds': summary['train_seconds'], 'wall_seconds': wall_seconds,
  }


def _write_json(path, obj):
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, default=str)
    f.write('\n')
  os.replace(tmp, path)  # a kill leaves the old file, never half a new one


def _check_spec(path: str, train_config, model_flags=()):
  """Writes WORKDIR/scaling.json, or checks its training config is this one (same budget)."""
  base = json.loads(json.dumps(sweep_lib._flatten(train_config), default=str))  # pylint: disable=protected-access
  # --config.model.* flags change every point too: they count as part of the config.
  base.update({f'model.{k} (flag)': v for k, v in model_flags})
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)['base_config']
    # A field added to the library since, at its neutral value, is no change (workdir.ADDED_FIELDS).
    old, now = workdir_lib.drop_added_defaults(old), workdir_lib.drop_added_defaults(base)
    diff = next((k for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)), None)
    if diff is not None:
      raise ScalingError(f'{path} was written for another training config (config.{diff} was '
                         f'{old.get(diff)!r}, now {now.get(diff)!r}); its points would not compare, '
                         'so use a new --workdir.')
  else:
    _write_json(path, {'base_config': base})


def run(config, workdir: str, variants, model_flags=(), train_fn=None, out=sys.stdout,
        ledger: str | None = None, max_minutes: float = 0.0) -> list:
  """Runs (or resumes) a scaling sweep and returns the records of all its points.

  Args:
    config: a scaling config (a training config plus a `scaling` section).
    workdir: directory of the sweep: scaling.json, records.json and one workdir per point.
    variants: scaling model names (`VARIANTS` keys or model names), e.g. ['deres', 'onetrans'].
    model_flags: --config.model.* flags [(field, text)], applied to every point first.
    train_fn: the training function (default `trainer.train_and_evaluate`; tests count calls).
    out: where the progress lines go.
    ledger: a run ledger path (train/ledger.py; launch/scaling.py puts it beside --out): finished
      points are restored from it, trained ones added.
    max_minutes: 0: train every point; > 0: start no new point after this many minutes; < 0:
      train nothing, return the finished points (a partial report while another process trains).
  Returns:
    One record (see `record`) per finished point, in sweep order; failed points are left out.
  Raises:
    ScalingError: an unknown model or reference, or a workdir of another training config.
    ConfigError: a point whose config is invalid, naming the point (before anything trains).
  """
  train_fn = train_fn or trainer.train_and_evaluate
  base, scaling = split_config(config)
  if not variants:
    raise ScalingError('give at least one model, e.g. --models=deres,onetrans.')
  pts = points(scaling, variants)
  # ------------------------------------------------------------ Every config first.
  configs = []
  for p in pts:
    try:
      cfg = sweep_lib.trial_config(base, p['overrides'], model_flags)
      configs.append(config_lib.validate(cfg, num_devices=jax.device_count()))
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f'point {p["name"]}: {e}') from None
  os.makedirs(workdir, exist_ok=True)
  _check_spec(os.path.join(workdir, 'scaling.json'), base, model_flags)
  # ------------------------------------------------------------ Points (the job runner).
  records, n = [], len(pts)
  todo = sum(not os.path.exists(os.path.join(workdir, p['name'], 'summary.json')) for p in pts)
  print(f'Scaling sweep: {n} points ({n - todo} finished before) in {workdir}; '
        + (f'up to {base.train.num_epochs:g} epochs of {base.train.batch_size} rows each, early stopping.'
           if base.train.num_epochs else f'{base.train.num_steps} steps × {base.train.batch_size} rows each.'),
        file=out, flush=True)

  def on_result(result):
    i = pts_by_name[result.job.name]
    if result.summary is None:  # recorded in failed.json by the runner, retried next run
      return
    rec = record(pts[i], configs[i], result.summary, result.seconds)
    _write_json(os.path.join(workdir, result.job.name, 'record.json'), rec)
    records.append(rec)
    _write_json(os.path.join(workdir, 'records.json'), records)

  pts_by_name = {p['name']: i for i, p in enumerate(pts)}
  results = jobs.run([jobs.Job(p['name'], cfg) for p, cfg in zip(pts, configs)], workdir, train_fn,
                     describe=lambda s: f"test auc {s['test_auc']:.5f}", on_result=on_result, out=out,
                     ledger=ledger, max_minutes=max_minutes)
  trained = sum(r.status == 'trained' for r in results)
  _write_json(os.path.join(workdir, 'records.json'), records)
  print(f'Scaling sweep done: {len(records)}/{n} points finished ({trained} trained now).', file=out,
        flush=True)
  return records

