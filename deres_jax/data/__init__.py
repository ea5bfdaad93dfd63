"""Datasets. `DATASETS` maps `config.data.name` to a loader returning a `Dataset`."""
import dataclasses

from deres_jax.data import synthetic
from deres_jax.data.schema import Schema, check_split


class DataMissingError(FileNotFoundError):
  """The prepared data a config asks for is not where the config says."""


@dataclasses.dataclass
class Dataset:
  schema: Schema
  splits: dict  # 'train' | 'val' | 'test' -> {column: np.ndarray}
  source: str = ''


def load_synthetic(data_config) -> Dataset:
  spec = synthetic.SyntheticSpec(**{f.name: data_config[f.name]
                                    for f in dataclasses.fields(synthetic.SyntheticSpec)
                                    if f.name in data_config})
  schema, splits = synthetic.generate(spec)
  return Dataset(schema, splits, source=f'synthetic(seed={spec.seed})')


def load_criteo(data_config) -> Dataset:
  raise DataMissingError(
      'configs/criteo.py trains on the Kaggle Criteo Display Advertising Challenge data, prepared '
      f'into config.data.path={data_config.get("path", "")!r}, and this version of deres_jax cannot '
      'prepare it yet: the Criteo preparation (BARS split, vocabularies, bucketing) is tracked by '
      'the real-data issue. Download dac.tar.gz (train.txt, 45,840,617 rows) from Kaggle and keep '
      'it; until then train on synthetic Criteo-schema data with '
      '`python launch/train.py --config=configs/quickstart.py --workdir=/tmp/quickstart`.')


DATASETS = {
    'synthetic': load_synthetic,   # Criteo-schema data with a known oracle
    'criteo': load_criteo,         # Kaggle Criteo (needs preparation)
}


def load(data_config) -> Dataset:
  """Loads the dataset named by `data_config.name` and validates its splits."""
  name = data_config.name
  if name not in DATASETS:
    raise ValueError(f'config.data.name={name!r} is not a dataset; choose one of {sorted(DATASETS)}')
  ds = DATASETS[name](data_config)
  for split_name, split in ds.splits.items():
    check_split(ds.schema, split, f'{name}/{split_name}')
  return ds
