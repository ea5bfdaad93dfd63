"""Prints each model's config fields (default and meaning) as Markdown.

  python -m deres_jax.models              # every model
  python -m deres_jax.models onetrans     # one model

docs/models.md is this output for every model.
"""
import sys

from deres_jax import models


def describe(name: str) -> str:
  cls = models.get_class(name)
  # The first line of the model module's docstring: the paper and what the model does.
  doc = (sys.modules[cls.__module__].__doc__ or '').strip().splitlines()[0]
  lines = [f'### `{name}` ({cls.__module__}.{cls.__name__})', '', doc, '',
           '| field | default | meaning |', '|---|---|---|']
  allowed = models.choices(name)
  for key, (default, comment) in models.fields(name).items():
    extra = f" (one of {', '.join(repr(c) for c in allowed[key])})" if key in allowed else ''
    comment = comment.replace('|', '\\|')
    lines.append(f'| `{key}` | `{default!r}` | {comment}{extra} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  names = argv[1:] or list(models.MODELS)
  print('\n'.join(describe(n) for n in names))


if __name__ == '__main__':
  main(sys.argv)
