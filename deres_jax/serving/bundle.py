"""What every exported model directory shares (`export`, `genrec_export`, `multiscenario_export`).

  params.npz       the parameters, one array per leaf ('tokenizer/embedding', ...): `save_params`
  vocab.npz        per categorical field, the keys of its raw values in id order: `save_vocab`
  manifest.json    written last by `write`; every manifest carries `versions()` (library and jax
                   versions, the export time)

`write` builds the directory beside `out` (`<out>.tmp-<pid>`) and renames it into place when
complete, so a failed or interrupted export never leaves a complete-looking model directory.
"""
import datetime
import importlib.metadata
import json
import os
import shutil

import jax
import numpy as np

PLATFORMS = ('cpu', 'cuda', 'tpu')  # one file serves on any of them (jax.export multi-platform lowering)


def library_version() -> str:
  try:
    return importlib.metadata.version('deres_jax')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown'


def versions() -> dict:
  """The manifest keys every export writes: library and jax versions, the export time (UTC)."""
  return {'library_version': library_version(), 'jax_version': jax.__version__,
          'exported_at': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def flatten_params(params) -> dict:
  """{'a/b/c': array} of a nested parameter dict (load.unflatten_params inverts it)."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    out['/'.join(str(k.key) for k in path)] = np.asarray(jax.device_get(leaf))
  return out


def check_out(out: str, overwrite: bool) -> str:
  """The absolute path of the model directory `out`; raises if it exists and `overwrite` is off."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f'{out} already exists; pass --overwrite to replace it')
  return out


def save_exported(path: str, exported):
  """Writes a `jax.export.Exported` (serialized StableHLO) to `path`."""
  with open(path, 'wb') as f:
    f.write(exported.serialize())


def save_params(directory: str, params):
  """Writes `directory`/params.npz: one array per parameter leaf (`flatten_params`)."""
  np.savez(os.path.join(directory, 'params.npz'), **flatten_params(params))


def save_vocab(directory: str, names, keys):
  """Writes `directory`/vocab.npz: per categorical field `names[j]` its int64 keys in id order
  (id = 1 + position; `exported.load_vocab` reads it back)."""
  np.savez(os.path.join(directory, 'vocab.npz'), **{n: np.asarray(k, np.int64) for n, k in zip(names, keys)})


def write(out: str, manifest: dict, write_files):
  """Writes the model directory `out` atomically: `write_files(tmp)`, then tmp/manifest.json, then
  the rename of tmp onto `out` (an existing `out` is replaced). On any failure tmp is removed."""
  tmp = f'{out}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    write_files(tmp)
    with open(os.path.join(tmp, 'manifest.json'), 'w') as f:
      json.dump(manifest, f, indent=2)
    if os.path.exists(out):
      shutil.rmtree(out)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
