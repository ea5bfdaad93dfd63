"""What every `launch/*.py` entry point shares: model-flag splitting and one-line override errors.

  if __name__ == '__main__':
    cli.run(main, model_flags=_MODEL_FLAGS)

`--config.model.*` flags are taken out of argv before absl parses it (they are applied after
the config file, name first: `config.apply_model_overrides`), and a mistyped key or a wrong
type in a `--config.x=y` override prints one line and exits with 2 instead of a traceback.
Errors raised once `main` has started (training itself) keep their traceback.
"""
import sys

from absl import app

_STARTED = [False]


def started():
  """Marks the work as started: from here on errors keep their traceback (call first in main)."""
  _STARTED[0] = True


def override_error(e: Exception) -> str:
  """One line from ml_collections' error for a bad --config.x=y override."""
  msg = str(e.args[0] if e.args else e).replace("\\'", "'").replace('\\n', ' ')
  msg = ' '.join(msg.split()).strip('\'"')
  if 'Did you mean' in msg:
    key, hint = msg.split('Did you mean', 1)
    key = key.strip(" '")
    msg = f'unknown config key {key!r}. Did you mean{hint}'
  return f'error: bad --config override: {msg}'


def run(main, model_flags: list | None = None, argv: list | None = None):
  """app.run(main) with `--config.model.*` flags moved from argv into `model_flags` (in place)."""
  from deres_jax.config import split_model_flags  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv if argv is None else argv)
  if model_flags is not None:
    argv, model_flags[:] = split_model_flags(argv)
  sys.argv = argv
  try:
    app.run(main)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if _STARTED[0]:  # an error from the work itself: keep the traceback
      raise
    print(override_error(e), file=sys.stderr)  # a mistyped key or a wrong type, before any work
    sys.exit(2)
