"""Any prepared CTR dataset as a TensorFlow-Datasets builder (ArrayRecord; no TensorFlow needed).

  python launch/prepare_data.py criteo --manual_dir=DIR --data_dir=OUT --tfds
  python launch/prepare_data.py csv --config=configs/byo_csv.py --data_dir=OUT --tfds
  python launch/prepare_data.py amazon --category=beauty --data_dir=OUT --tfds
  CriteoCtr(data_dir=OUT).download_and_prepare(   # Criteo/Avazu from the download: prepares first
      download_config=tfds.download.DownloadConfig(manual_dir=DIR))

All build through TFDS itself (tfds 4.9.10 builds `file_format='array_record'` datasets
without TensorFlow; research/verified.md). `PreparedCtr` copies any directory written by
`preprocess.prepare` (Criteo, Avazu, your CSV/Parquet, Amazon), one ArrayRecord record per
row, in the row order of the .npy columns:
  {'label': float32, 'cat': int32[F_cat], 'dense': float32[F_dense] (if any),
   'seq': int32[F_seq, L] (if sequence fields; -1 = padding), 'scenario': int32 (if any)},
with the schema in `info.metadata` (the keys of schema.Schema: cat_names, vocab_sizes,
dense_names, seq_names, seq_vocab_sizes, seq_shared, seq_len, num_scenarios; `schema_of`
rebuilds it) and the preparation's spec and options under 'prepared_with'. `CriteoCtr` and
`AvazuCtr` are the same builder under their own names; given no prepared directory they
first run the columnar preparation (`preprocess.prepare`, the training path's code and
options) on the manual download. Read a copy back with

  builder = tfds_builders.PreparedCtr(data_dir=OUT + '/tfds')   # or CriteoCtr, AvazuCtr
  source = builder.as_data_source(split='train')   # random access: len(source), source[i]

Training itself reads the memory-mapped .npy columns instead: per-record ArrayRecord reads
are far slower than slicing columns (research/verified.md), and the TFDS copy is for
interchange (Grain, other tools), not the hot path.
"""
import os

import numpy as np
import tensorflow_datasets as tfds

from deres_jax.data import avazu
from deres_jax.data import criteo
from deres_jax.data import prepared
from deres_jax.data import preprocess
from deres_jax.data import rows
from deres_jax.data.schema import Schema

_SCHEMA_KEYS = tuple(Schema().to_json())


def features_of(schema: Schema) -> tfds.features.FeaturesDict:
  """The record of one row of a prepared dataset with this schema."""
  features = {'label': tfds.features.Scalar(np.float32)}
  if schema.cat_names:
    features['cat'] = tfds.features.Tensor(shape=(len(schema.cat_names),), dtype=np.int32)
  if schema.dense_names:
    features['dense'] = tfds.features.Tensor(shape=(len(schema.dense_names),), dtype=np.float32)
  if schema.seq_names:
    features['seq'] = tfds.features.Tensor(shape=(len(schema.seq_names), schema.seq_len), dtype=np.int32)
  if schema.num_scenarios:
    features['scenario'] = tfds.features.Scalar(np.int32)
  return tfds.features.FeaturesDict(features)


def schema_of(builder: tfds.core.DatasetBuilder) -> Schema:
  """The Schema stored in a written copy's `info.metadata`."""
  return Schema.from_json({k: builder.info.metadata[k] for k in _SCHEMA_KEYS})


class PreparedCtr(tfds.core.GeneratorBasedBuilder):
  """A CTR dataset written from `preprocess.prepare` output (any schema, sequence fields included)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'One record per prepared row: label, cat, dense, seq, scenario.'}

  def __init__(self, *, prepared_dir: str = '', **kwargs):
    self._prepared_dir = prepared_dir
    super().__init__(file_format='array_record', **kwargs)

  def _schema(self):
    """The schema to write, or None: a reader takes the features of the written copy."""
    if self._prepared_dir:
      return Schema.from_json(prepared.read_meta(self._prepared_dir)['schema'])
    return None

  def _info(self):
    data_dir = getattr(self, '_data_dir', None)
    written = (not self._prepared_dir and data_dir is not None
               and os.path.exists(os.path.join(data_dir, 'features.json')))
    schema = None if written else self._schema()
    # _info() must not use dataset_info_from_configs here: that looks for metadata files
    # next to this module (research/verified.md). Features and metadata None: TFDS restores
    # both from the written copy (DatasetInfo.read_from_directory).
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=None if schema is None else features_of(schema),
        disable_shuffling=True,  # record i of a split is row i of the .npy columns
        metadata=None if schema is None else tfds.core.MetadataDict(
            cat_names=list(schema.cat_names), dense_names=list(schema.dense_names)))

  def _prepared_path(self, dl_manager) -> str:
    del dl_manager
    if not self._prepared_dir:
      raise ValueError(f'{type(self).__name__} writes a prepared directory: pass prepared_dir= '
                       '(a directory written by launch/prepare_data.py)')
    return self._prepared_dir

  def _split_generators(self, dl_manager):
    schema, splits, meta = prepared.load_splits(self._prepared_path(dl_manager))
    self.info.metadata.update({k: list(v) if isinstance(v, tuple) else v
                               for k, v in schema.to_json().items()})
    self.info.metadata['prepared_with'] = {'spec': meta['spec'], 'options': meta['options']}
    return {name: self._generate_examples(cols) for name, cols in splits.items()}

  def _generate_examples(self, cols):
    keys = [k for k in cols if k in self.info.features]
    n = len(cols['label'])
    step = 65_536  # read columns in blocks: one memmap slice per block, not per row
    for start in range(0, n, step):
      block = {k: np.asarray(cols[k][start:start + step]) for k in keys}
      for i in range(len(block['label'])):
        yield start + i, {k: v[i] for k, v in block.items()}


def _find(manual_dir, names, instructions):
  for name in names:
    path = os.path.join(manual_dir, name)
    if os.path.isfile(path):
      return [path]
  raise FileNotFoundError(f'none of {list(names)} is in the manual directory {manual_dir!r}.\n'
                          + instructions)


class _KaggleCtr(PreparedCtr):
  """A Kaggle CTR download: prepared next to the TFDS data first when no prepared_dir is given."""

  RELEASE_NOTES = {'1.0.0': 'BARS-style preparation: random 8:1:1 split, min_count vocabularies.'}
  MIN_COUNT = 10

  def __init__(self, *, prepared_dir: str = '', min_count: int = 0, keep_dense: bool = False,
               **kwargs):
    self._min_count = min_count or self.MIN_COUNT
    self._keep_dense = keep_dense
    if prepared_dir:  # the row format follows what was prepared
      self._keep_dense = bool(prepared.read_meta(prepared_dir)['spec']['keep_dense'])
    super().__init__(prepared_dir=prepared_dir, **kwargs)

  def row_spec(self) -> rows.RowSpec:
    raise NotImplementedError

  def _find_input(self, manual_dir) -> list:
    raise NotImplementedError

  def _schema(self):
    spec = self.row_spec()  # no prepared_dir: the names are known before the preparation
    return super()._schema() or Schema(cat_names=tuple(spec.cat_names), dense_names=tuple(spec.dense_names))

  def _prepared_path(self, dl_manager):
    path = self._prepared_dir
    if not path:  # built from the manual download: prepare next to the TFDS data first
      path = os.path.join(os.path.dirname(self.data_dir), 'prepared')
      if not prepared.is_complete(path):
        preprocess.prepare(self.row_spec(), self._find_input(dl_manager.manual_dir), path,
                           preprocess.Options(min_count=self._min_count), overwrite=True)
    return path


class CriteoCtr(_KaggleCtr):
  """Criteo Display Advertising Challenge (Kaggle train.txt), BARS Criteo_x4-style preparation."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = criteo.MANUAL_DOWNLOAD_INSTRUCTIONS
  MIN_COUNT = criteo.MIN_COUNT

  def row_spec(self):
    return criteo.spec(keep_dense=self._keep_dense)

  def _find_input(self, manual_dir):
    return _find(manual_dir, criteo.FILES, criteo.MANUAL_DOWNLOAD_INSTRUCTIONS)


class AvazuCtr(_KaggleCtr):
  """Avazu CTR Prediction (Kaggle train), BARS Avazu_x4-style preparation."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = avazu.MANUAL_DOWNLOAD_INSTRUCTIONS
  MIN_COUNT = avazu.MIN_COUNT

  def row_spec(self):
    return avazu.spec()

  def _find_input(self, manual_dir):
    return _find(manual_dir, avazu.FILES, avazu.MANUAL_DOWNLOAD_INSTRUCTIONS)


BUILDERS = {'criteo': CriteoCtr, 'avazu': AvazuCtr}  # any other dataset: PreparedCtr


def build(name: str, prepared_dir: str, tfds_dir: str):
  """Writes the TFDS ArrayRecord copy of a prepared directory; returns the builder.

  `name` picks the builder (criteo_ctr, avazu_ctr; anything else, e.g. 'csv' or 'amazon',
  prepared_ctr): the copy lands in `tfds_dir/<builder name>/1.0.0/`.
  """
  builder = BUILDERS.get(name, PreparedCtr)(prepared_dir=prepared_dir, data_dir=tfds_dir)
  builder.download_and_prepare()
  return builder
