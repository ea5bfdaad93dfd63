"""Prints each model's config fields (default and meaning) as Markdown, for any family.

  python -m deres_jax.models                           # every CTR model
  python -m deres_jax.models onetrans                  # one model
  python -m deres_jax.models --family=multiscenario    # MI-DPG and its baselines
  python -m deres_jax.models --family=genrec           # SASRec and TIGER (genrec model sections)

docs/models.md is this output for every CTR model. Every family's model section is made from
the model's own dataclass fields and their comments (`models.dataclass_fields`).
"""
import sys

from deres_jax import models


def _family_models(family: str) -> dict:
  """{name: (class, {field: (default, comment)}, {field: allowed values})} of a family."""
  if family == 'ctr':
    return {n: (models.get_class(n), models.fields(n), models.choices(n)) for n in models.MODELS}
  if family == 'multiscenario':
    from deres_jax.multiscenario import models as ms  # pylint: disable=g-import-not-at-top
    return {n: (ms.get_class(n), ms.fields(n), dict(getattr(ms.get_class(n), 'CHOICES', {})))
            for n in ms.MODELS}
  if family == 'genrec':
    from deres_jax.genrec import config as genrec_config  # pylint: disable=g-import-not-at-top
    from deres_jax.genrec import sasrec, tiger  # pylint: disable=g-import-not-at-top
    return {'sasrec': (sasrec.SASRec, genrec_config.model_fields('sasrec'), {}),
            'tiger': (tiger.Tiger, genrec_config.model_fields('tiger'), {})}
  raise SystemExit(f"error: --family={family!r} is not one of 'ctr', 'multiscenario', 'genrec'.")


def describe(name: str, family: str = 'ctr') -> str:
  cls, fields, allowed = _family_models(family)[name]
  # The first line of the model module's docstring: the paper and what the model does.
  doc = (sys.modules[cls.__module__].__doc__ or '').strip().splitlines()[0]
  lines = [f'### `{name}` ({cls.__module__}.{cls.__name__})', '', doc, '',
           '| field | default | meaning |', '|---|---|---|']
  for key, (default, comment) in fields.items():
    extra = f" (one of {', '.join(repr(c) for c in allowed[key])})" if key in allowed else ''
    comment = comment.replace('|', '\\|')
    lines.append(f'| `{key}` | `{default!r}` | {comment}{extra} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  family = 'ctr'
  names = []
  for arg in argv[1:]:
    if arg.startswith('--family='):
      family = arg.split('=', 1)[1]
    else:
      names.append(arg)
  known = _family_models(family)
  for n in names:
    if n not in known:
      raise SystemExit(f'error: {n!r} is not a {family} model; choose one of {list(known)}.')
  print('\n'.join(describe(n, family) for n in names or known))


if __name__ == '__main__':
  main(sys.argv)
