"""Criteo and Avazu as TensorFlow-Datasets builders (ArrayRecord; no TensorFlow needed).

  tfds build deres_jax/data/tfds_builders.py --manual_dir=DIR   # or, equivalently and faster:
  python launch/prepare_data.py criteo --manual_dir=DIR --data_dir=OUT

Both build through TFDS itself (tfds 4.9.10 builds `file_format='array_record'` datasets
without TensorFlow; research/verified.md). A builder first runs the columnar preparation
(`preprocess.prepare`, the same code and options as the training path) unless it is given
an already prepared directory, then writes one ArrayRecord record per row:
{'label': float32, 'cat': int32[F_cat], 'dense': float32[F_dense] (if any)}, with the
vocabulary sizes in `info.metadata`. Read it back with

  builder = tfds_builders.CriteoCtr(data_dir=OUT + '/tfds')
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


class _PreparedCtr(tfds.core.GeneratorBasedBuilder):
  """A CTR dataset written from `preprocess.prepare` output."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'BARS-style preparation: random 8:1:1 split, min_count vocabularies.'}
  MIN_COUNT = 10

  def __init__(self, *, prepared_dir: str = '', min_count: int = 0, keep_dense: bool = False,
               **kwargs):
    self._prepared_dir = prepared_dir
    self._min_count = min_count or self.MIN_COUNT
    self._keep_dense = keep_dense
    if prepared_dir:  # the row format follows what was prepared
      self._keep_dense = bool(prepared.read_meta(prepared_dir)['spec']['keep_dense'])
    super().__init__(file_format='array_record', **kwargs)

  def row_spec(self) -> rows.RowSpec:
    raise NotImplementedError

  def _find_input(self, manual_dir) -> list:
    raise NotImplementedError

  def _info(self):
    spec = self.row_spec()
    features = {'label': tfds.features.Scalar(np.float32),
                'cat': tfds.features.Tensor(shape=(len(spec.cat_names),), dtype=np.int32)}
    if spec.dense_names:
      features['dense'] = tfds.features.Tensor(shape=(len(spec.dense_names),), dtype=np.float32)
    # _info() must not use dataset_info_from_configs here: that looks for metadata files
    # next to this module (research/verified.md).
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=tfds.features.FeaturesDict(features),
        disable_shuffling=True,  # record i of a split is row i of the .npy columns
        metadata=tfds.core.MetadataDict(cat_names=list(spec.cat_names),
                                        dense_names=list(spec.dense_names)))

  def _split_generators(self, dl_manager):
    path = self._prepared_dir
    if not path:  # `tfds build --manual_dir=...`: prepare next to the TFDS data first
      path = os.path.join(os.path.dirname(self.data_dir), 'prepared')
      if not prepared.is_complete(path):
        preprocess.prepare(self.row_spec(), self._find_input(dl_manager.manual_dir), path,
                           preprocess.Options(min_count=self._min_count), overwrite=True)
    schema, splits, meta = prepared.load_splits(path)
    self.info.metadata['vocab_sizes'] = list(schema.vocab_sizes)
    self.info.metadata['prepared_with'] = {'spec': meta['spec'], 'options': meta['options']}
    return {name: self._generate_examples(cols) for name, cols in splits.items()}

  def _generate_examples(self, cols):
    n = len(cols['label'])
    step = 65_536  # read columns in blocks: one memmap slice per block, not per row
    for start in range(0, n, step):
      block = {k: np.asarray(v[start:start + step]) for k, v in cols.items() if k != 'scenario'}
      for i in range(len(block['label'])):
        yield start + i, {k: v[i] for k, v in block.items()}


def _find(manual_dir, names, instructions):
  for name in names:
    path = os.path.join(manual_dir, name)
    if os.path.isfile(path):
      return [path]
  raise FileNotFoundError(f'none of {list(names)} is in the manual directory {manual_dir!r}.\n'
                          + instructions)


class CriteoCtr(_PreparedCtr):
  """Criteo Display Advertising Challenge (Kaggle train.txt), BARS Criteo_x4-style preparation."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = criteo.MANUAL_DOWNLOAD_INSTRUCTIONS
  MIN_COUNT = criteo.MIN_COUNT

  def row_spec(self):
    return criteo.spec(keep_dense=self._keep_dense)

  def _find_input(self, manual_dir):
    return _find(manual_dir, criteo.FILES, criteo.MANUAL_DOWNLOAD_INSTRUCTIONS)


class AvazuCtr(_PreparedCtr):
  """Avazu CTR Prediction (Kaggle train), BARS Avazu_x4-style preparation."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = avazu.MANUAL_DOWNLOAD_INSTRUCTIONS
  MIN_COUNT = avazu.MIN_COUNT

  def row_spec(self):
    return avazu.spec()

  def _find_input(self, manual_dir):
    return _find(manual_dir, avazu.FILES, avazu.MANUAL_DOWNLOAD_INSTRUCTIONS)


BUILDERS = {'criteo': CriteoCtr, 'avazu': AvazuCtr}


def build(name: str, prepared_dir: str, tfds_dir: str):
  """Writes the TFDS ArrayRecord copy of a prepared directory; returns the builder."""
  builder = BUILDERS[name](prepared_dir=prepared_dir, data_dir=tfds_dir)
  builder.download_and_prepare()
  return builder
