"""How a model family plugs into the one training loop (`deres_jax/train/trainer.py`).

A family is a bundle of pure functions, in the manner of optax's `GradientTransformation`:
no base class, no callbacks, no registry. `config.family` names it; `get(name)` imports the
module of `FAMILIES[name]` and returns its `FAMILY`:

  * 'ctr'            deres_jax/train/ctr.py          CTR ranking (deres_jax.models)
  * 'multiscenario'  deres_jax/multiscenario/family.py  multi-scenario CVR (MI-DPG, STAR, ...)
  * 'genrec'         deres_jax/genrec/family.py      generative retrieval (SASRec, TIGER, CAPSID)

`Family.build(config, dataset, workdir, mesh)` returns a `Task`: what the loop needs of one
run. Everything else (workdir lock, config-drift check on resume, mesh, sharded state,
non-finite guard, checkpoints and exact resume, SIGTERM, best model, early stopping,
metrics.jsonl, summary.json) is the loop's and the same for every family.
"""
import importlib
from typing import Any, Callable, NamedTuple

FAMILIES = {
    'ctr': 'deres_jax.train.ctr',
    'multiscenario': 'deres_jax.multiscenario.family',
    'genrec': 'deres_jax.genrec.family',
}


class Task(NamedTuple):
  """One run of a family, as the loop sees it (built after the data are loaded)."""
  init: Callable[[Any], Any]
  """rng -> parameters (may carry Flax logical-axis boxes: they pick the shardings)."""
  loss: Callable[..., tuple]
  """(params, batch, rng, step) -> (scalar loss, {'train/loss': ..., other metrics})."""
  train: dict
  """numpy columns the training batches are drawn from (rows on axis 0), e.g. label/dense/cat."""
  evaluate: Callable[..., dict]
  """(params, split, step) -> flat metrics of split 'val' or 'test' (host floats)."""
  summary: Callable[..., dict]
  """(params, step) -> the family's fields of summary.json (test metrics included)."""
  prepare: Callable[[dict], dict] | None = None
  """host-side transform of a batch of `train` rows into model inputs (e.g. tokens); None = as is."""
  higher_is_better: bool = True
  """direction of `config.eval.monitor` (the best model and early stopping)."""
  model_state: Callable[[Any], dict] | None = None
  """rng -> the model's non-trainable variable collections (e.g. STAR's {'batch_stats': ...}),
  or None. With it, `loss` takes them as a 5th argument and returns (loss, (metrics, updated
  collections)); the loop keeps them in the train state (checkpointed, exact resume) and
  `evaluate`/`summary` get the Flax variables {'params': ..., **collections} in place of the
  parameters (train/step.py)."""
  buckets: Any = None
  """optional int key per `train` row (a length bucket): batches are drawn one key at a time
  (data/iterator.py BatchIterator), so `prepare` can cut padding to the batch's longest row."""


class Family(NamedTuple):
  """The functions of one family (`FAMILY` in its module)."""
  validate: Callable[..., Any]
  """(config, num_devices=None) -> config; raises config.ConfigError with one sentence."""
  load: Callable[[Any], Any]
  """config -> dataset (whatever `build` reads)."""
  build: Callable[..., Task]
  """(config, dataset, workdir, mesh) -> Task."""
  report: Callable[[dict], None]
  """summary -> prints the run's result table."""
  apply_overrides: Callable[..., Any]
  """(config, [(model field, text)]) -> config: the --config.model.* flags (name first)."""
  after_training: Callable[..., dict] = lambda config, workdir, summary, dataset=None: summary
  """(config, workdir, summary, dataset) -> summary: runs a family adds after the main one
  (the CTR logistic-regression baseline); by default nothing."""


def name_of(config) -> str:
  """The family of a config ('ctr' when the field is absent: configs written before it)."""
  return config.get('family', 'ctr')


def get(name_or_config) -> Family:
  """The `Family` named by a string or by a config's `family` field."""
  name = name_or_config if isinstance(name_or_config, str) else name_of(name_or_config)
  if name not in FAMILIES:
    from deres_jax.config import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f'config.family={name!r} is not one of {list(FAMILIES)}.')
  return importlib.import_module(FAMILIES[name]).FAMILY
