"""Bad input: every kind counted with line numbers, strict mode, gzip damage, and a fuzz test."""
import gzip
import os
import random
import re

import numpy as np
import pytest

from deres_jax.data import criteo, delimited, prepared, preprocess
from deres_jax.data import rows as rows_lib
from deres_jax.data.bad_input import BadInput, BadInputError

DATA = os.path.join(os.path.dirname(__file__), 'data')
GOOD = open(os.path.join(DATA, 'paddlerec_criteo_raw_train_sample.txt'), 'rb').read().split(b'\n')
SHORT = [l for l in open(os.path.join(DATA, 'paddlerec_criteo_raw_test_sample.txt'), 'rb').read()
         .split(b'\n') if l.count(b'\t') < 39]
QUIET = dict(log=lambda *a: None)


def bad_file(tmp_path):
  """Good rows with one bad row of each kind; returns (path, {kind: [line numbers]})."""
  g = iter(GOOD)
  lines = [next(g), next(g)]
  expect = {}

  def add(kind, line):
    lines.append(line)
    expect.setdefault(kind, []).append(len(lines))
  add('blank_line', b'')
  lines.append(SHORT[0])                                    # short rows are valid
  add('field_count', next(g) + b'\textra')                   # 41 fields
  add('field_count', b'\t'.join(next(g).split(b'\t')[:10]))  # 10 fields: lost integer fields
  f = next(g).split(b'\t')
  f[5] = b'abc'
  add('non_numeric', b'\t'.join(f))
  f = next(g).split(b'\t')
  f[3] = b'12.5'  # not an integer
  add('non_numeric', b'\t'.join(f))
  f = next(g).split(b'\t')
  f[0] = b'2'
  add('bad_label', b'\t'.join(f))
  f = next(g).split(b'\t')
  f[0] = b''
  add('bad_label', b'\t'.join(f))
  f = next(g).split(b'\t')
  f[20] = b'\xff\xfe\x00'
  add('non_utf8', b'\t'.join(f))
  lines += [next(g), next(g)]
  path = tmp_path / 'bad.txt'
  path.write_bytes(b'\n'.join(lines) + b'\n')
  return path, expect, len(lines)


def test_each_bad_kind_is_counted_with_line_numbers(tmp_path, capsys):
  path, expect, n = bad_file(tmp_path)
  s = preprocess.prepare(criteo.spec(), [str(path)], str(tmp_path / 'p'), preprocess.Options(min_count=1))
  got = {k: v['first_lines'] for k, v in s['bad_rows'].items()}
  assert got == expect
  assert sum(s['rows'].values()) == n - sum(len(v) for v in expect.values())
  out = capsys.readouterr().out
  assert 'bad rows skipped: 8' in out and 'field_count: 2' in out and f'{path}:{expect["non_numeric"][0]}' in out
  assert prepared.is_complete(str(tmp_path / 'p'))


def test_strict_stops_at_first_bad_row_with_line_and_reason(tmp_path):
  path, expect, _ = bad_file(tmp_path)
  with pytest.raises(BadInputError, match=rf'{re.escape(str(path))}:{expect["blank_line"][0]}: blank line'):
    preprocess.prepare(criteo.spec(), [str(path)], str(tmp_path / 'p'), preprocess.Options(strict=True), **QUIET)
  assert not os.path.exists(tmp_path / 'p')
  # The reason names the field and value.
  f = GOOD[0].split(b'\t')
  f[5] = b'abc'
  (tmp_path / 'one.txt').write_bytes(GOOD[1] + b'\n' + b'\t'.join(f) + b'\n')
  with pytest.raises(BadInputError, match=r"one.txt:2: field I5='abc' is not a valid number"):
    preprocess.prepare(criteo.spec(), [str(tmp_path / 'one.txt')], str(tmp_path / 'q'),
                       preprocess.Options(strict=True), **QUIET)


@pytest.mark.parametrize('damage', ['truncate', 'corrupt'])
def test_damaged_gzip_is_reported_and_earlier_rows_kept(tmp_path, damage):
  raw = b'\n'.join(GOOD[:100]) + b'\n'
  blob = bytearray(gzip.compress(raw * 50))
  if damage == 'truncate':
    blob = blob[:len(blob) * 2 // 3]
  else:
    for i in range(len(blob) // 2, len(blob) // 2 + 64):
      blob[i] ^= 0x5A
  path = tmp_path / 'train.txt.gz'
  path.write_bytes(bytes(blob))
  s = preprocess.prepare(criteo.spec(), [str(path)], str(tmp_path / 'p'),
                         preprocess.Options(min_count=1, chunk_bytes=4096), **QUIET)
  assert s['bad_rows']['corrupt_gzip']['count'] == 1
  kept = sum(s['rows'].values())
  assert 0 < kept < 5000 and s['bad_rows']['corrupt_gzip']['first_lines'][0] >= kept
  with pytest.raises(BadInputError, match='corrupt or truncated gzip'):
    preprocess.prepare(criteo.spec(), [str(path)], str(tmp_path / 'q'),
                       preprocess.Options(strict=True, chunk_bytes=4096), **QUIET)


NUM = re.compile(rb'[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?')


def reference(line: bytes):
  """An independent, slow parse of one Criteo line: a bad kind, or (label, buckets, cat keys)."""
  if line == b'':
    return 'blank_line'
  try:
    line.decode('utf-8')
  except UnicodeDecodeError:
    return 'non_utf8'
  if b'\0' in line:
    return 'non_utf8'
  f = line.split(b'\t')
  if not 14 <= len(f) <= 40:
    return 'field_count'
  f += [b''] * (40 - len(f))
  if not NUM.fullmatch(f[0]) or float(f[0]) not in (0.0, 1.0):
    return 'bad_label'
  buckets = []
  for x in f[1:14]:
    if x == b'':
      buckets.append(rows_lib.MISSING_INT)
      continue
    if not NUM.fullmatch(x) or not np.isfinite(float(x)) or float(x) != int(float(x)):
      return 'non_numeric'
    v = int(float(x))
    buckets.append(int(np.floor(np.log(v) ** 2)) if v > 2 else v)
  return float(f[0]), buckets, f[14:]


def mutate(rng, line: bytes) -> bytes:
  b = bytearray(line)
  for _ in range(rng.randint(1, 3)):
    op = rng.choice(['delete', 'insert', 'replace', 'tab', 'truncate', 'byte', 'digit'])
    i = rng.randrange(len(b) + 1) if b else 0
    if op == 'delete' and b:
      del b[min(i, len(b) - 1)]
    elif op == 'insert':
      b[i:i] = bytes([rng.choice(b'0123456789abcdef-.e+ _x')])
    elif op == 'replace' and b:
      b[min(i, len(b) - 1)] = rng.choice(b'0123456789-.\tz')
    elif op == 'tab':
      b[i:i] = b'\t'
    elif op == 'truncate':
      del b[i:]
    elif op == 'byte':
      b[i:i] = bytes([rng.randrange(128, 256)])
    elif op == 'digit':  # a long number: the slow path
      b[i:i] = b'123456789012'
  return bytes(b).replace(b'\n', b'').replace(b'\r', b'')


def test_fuzz_mutated_criteo_lines_are_parsed_or_flagged_exactly():
  rng = random.Random(0)
  lines = [mutate(rng, rng.choice(GOOD[:-1] + SHORT)) if rng.random() < 0.7 else rng.choice(GOOD[:-1])
           for _ in range(600)]
  chunk = delimited.Chunk(b'\n'.join(lines) + b'\n', 1, '\t')
  bad = BadInput()
  p = rows_lib.parse_chunk(criteo.spec(), chunk, 'fuzz', bad)
  ref = [reference(l) for l in lines]
  kinds = {}
  for i, r in enumerate(ref):
    if isinstance(r, str):
      kinds.setdefault(r, []).append(i + 1)
  assert {k: v for k, v in bad.counts.items() if v} == {k: len(v) for k, v in kinds.items()}
  for k, v in kinds.items():
    assert bad.lines[k] == v[:5]
  good = [i for i, r in enumerate(ref) if not isinstance(r, str)]
  long_keys = {}
  assert p.line.tolist() == [i + 1 for i in good]
  for row, i in enumerate(good):
    label, buckets, cats = ref[i]
    assert p.label[row] == label and p.keys[row, :13].tolist() == buckets, lines[i]
    for s, key in zip(cats, p.keys[row, 13:].tolist()):
      if len(s) <= 8:
        assert key == delimited.key_of_string(s), lines[i]
      else:  # long strings: a hash with a zero low byte, one-to-one here
        assert key & 0xFF == 0 and key == delimited.key_of_string(s)
        long_keys[s] = key
  assert len(set(long_keys.values())) == len(long_keys) > 0
  assert 100 < len(good) < 550  # the fuzz hits both sides
