"""Multi-scenario recommendation: data with a scenario column and K labels, MI-DPG and its
baselines (`models/`), per-scenario evaluation and a trainer on the CTR train step.

`DATASETS` maps `config.data.name` to a loader returning a `MultiScenarioData`
(docs/multiscenario.md).
"""
import dataclasses
import os

from deres_jax.multiscenario import samples
from deres_jax.multiscenario import synthetic
from deres_jax.multiscenario import data as data_lib
from deres_jax.multiscenario.data import MultiScenarioData


def load_synthetic(data_config) -> MultiScenarioData:
  names = {f.name for f in dataclasses.fields(synthetic.MultiScenarioSpec)}
  kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data_config.items()
            if k in names}
  return synthetic.generate(synthetic.MultiScenarioSpec(**kwargs))


def load_csv(data_config) -> MultiScenarioData:
  """One of `samples.FORMATS` from data.train_file (+ val_file, test_file, or a seeded split)."""
  if not data_config.train_file or not os.path.exists(data_config.train_file):
    raise FileNotFoundError(f'config.data.train_file={data_config.train_file!r} does not exist; '
                            'point it at a CSV in the Scenario-Wise Rec layout (docs/multiscenario.md).')
  files = ({'train': data_config.train_file, 'val': data_config.val_file,
            'test': data_config.test_file} if data_config.val_file else {'all': data_config.train_file})
  return samples.load(samples.format_from_config(data_config), files, data_config.target,
                      data_config.seed, data_config.get('max_rows', 0))


def load_aliexpress(data_config) -> MultiScenarioData:
  """AliExpress: DATA_DIR/AliExpress_<CC>/{train,test}.csv, one scenario per country."""
  countries = tuple(c.strip() for c in data_config.countries.split(',') if c.strip())
  return samples.load_aliexpress(data_config.path, countries, data_config.target or 'conversion',
                                 data_config.max_rows)


DATASETS = {
    'synthetic': load_synthetic,   # scenarios sharing part of a known label model (oracle known)
    'csv': load_csv,               # your CSV/Parquet by schema, or a preset (samples.FORMATS)
    'aliexpress': load_aliexpress,  # one directory per country, the country is the scenario
}


def load(data_config) -> MultiScenarioData:
  """The dataset of `config.data`, with its task (CTR/CVR/CTCVR) and shared-path rows applied."""
  if data_config.name not in DATASETS:
    raise ValueError(f'config.data.name={data_config.name!r} is not a multi-scenario dataset; '
                     f'choose one of {sorted(DATASETS)}.')
  d = DATASETS[data_config.name](data_config)
  d = data_lib.apply_task(d, data_config.get('task', ''))
  return data_lib.route_to_shared(d, data_config.get('shared_path_fraction', 0.0), data_config.seed)
