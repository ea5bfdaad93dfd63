"""Datasets. `DATASETS` maps `config.data.name` to a loader returning a `Dataset`."""
import dataclasses
import os

from deres_jax.data import prepared
from deres_jax.data import synthetic
from deres_jax.data import synthetic_interest
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


def load_synthetic_interest(data_config) -> Dataset:
  spec = synthetic_interest.InterestSpec(**{
      f.name: data_config[f.name] for f in dataclasses.fields(synthetic_interest.InterestSpec)
      if f.name in data_config})
  schema, splits = synthetic_interest.generate(spec)
  return Dataset(schema, splits, source=f'synthetic_interest(seed={spec.seed})')


def prepare_command(data_config) -> str:
  """The shell command that prepares what `data_config` asks for."""
  name, path = data_config.name, data_config.path or f'/data/deres/{data_config.name}'
  if name == 'csv':
    return f'python launch/prepare_data.py csv --config=<your config file> --data_dir={path}'
  if name == 'amazon':
    return f'python launch/prepare_data.py amazon --category=beauty --data_dir={path}'
  manual = {'criteo': '<dir with train.txt>', 'avazu': '<dir with train.gz>'}[name]
  return (f'python launch/prepare_data.py {name} --manual_dir={manual} --data_dir={path} '
          f'--min_count={data_config.min_count}')


def load_prepared(data_config) -> Dataset:
  """Loads a dataset prepared by launch/prepare_data.py from `data_config.path`."""
  path = data_config.path
  if not prepared.is_complete(path):
    state = ('is not set' if not path else f'={path!r} does not exist' if not os.path.exists(path)
             else f'={path!r} holds no complete prepared dataset (no COMPLETE marker)')
    raise DataMissingError(
        f'config.data.name={data_config.name!r} trains on prepared data and config.data.path '
        f'{state}. Prepare it once with\n  {prepare_command(data_config)}\nthen pass '
        '--config.data.path=<that --data_dir>. docs/data.md explains the options.')
  schema, splits, meta = prepared.load_splits(path)
  fmt = meta['spec']['name']
  if fmt != data_config.name:
    raise DataMissingError(f'config.data.path={path!r} holds {fmt!r} data, but '
                           f'config.data.name={data_config.name!r}.')
  return Dataset(schema, splits, source=f'{fmt}:{path}')


DATASETS = {
    'synthetic': load_synthetic,   # Criteo-schema data with a known oracle
    'synthetic_interest': load_synthetic_interest,  # multi-interest users, dense x cat crosses, oracle
    'criteo': load_prepared,       # Kaggle Criteo, prepared by launch/prepare_data.py criteo
    'avazu': load_prepared,        # Kaggle Avazu, prepared by launch/prepare_data.py avazu
    'csv': load_prepared,          # your own CSV/TSV/Parquet, prepared by ... prepare_data.py csv
    'amazon': load_prepared,       # Amazon Beauty/Sports/Toys with histories, ... prepare_data.py amazon
}


def drop_sequences(ds: Dataset) -> Dataset:
  """The dataset without its sequence fields: a history-blind baseline on the same rows."""
  schema = dataclasses.replace(ds.schema, seq_names=(), seq_vocab_sizes=(), seq_shared=(), seq_len=0)
  splits = {k: {c: v for c, v in split.items() if c != 'seq'} for k, split in ds.splits.items()}
  return Dataset(schema, splits, source=ds.source + ' (sequence fields dropped)')


def apply_options(ds: Dataset, data_config) -> Dataset:
  """The dataset as `data_config` asks for it (`sequences='drop'`): applied by `load` and by the
  CTR task to a dataset loaded once and shared by runs whose data sections differ (paper tables)."""
  sequences = data_config.get('sequences', 'keep')
  if sequences not in ('keep', 'drop'):
    raise ValueError(f"config.data.sequences={sequences!r}: choose 'keep' or 'drop'.")
  return drop_sequences(ds) if sequences == 'drop' and ds.schema.seq_names else ds


def load(data_config) -> Dataset:
  """Loads the dataset named by `data_config.name` and validates its splits."""
  name = data_config.name
  if name not in DATASETS:
    raise ValueError(f'config.data.name={name!r} is not a dataset; choose one of {sorted(DATASETS)}')
  ds = apply_options(DATASETS[name](data_config), data_config)
  for split_name, split in ds.splits.items():
    check_split(ds.schema, split, f'{name}/{split_name}')
  return ds
