"""Runs a snippet in a fresh Python process (the serving tests' "no training code imported" check)."""
import json
import os
import subprocess
import sys


def run(body: str, forbidden, timeout: int = 180):
  """Runs `body` (which prints one JSON line last) after `import json, sys`, then asserts that no
  module whose name starts with one of `forbidden` was imported; returns the parsed last line."""
  script = ('import json, sys\n' + body +
            f'bad = [m for m in sys.modules if m.startswith({tuple(forbidden)!r})]\n'
            'assert not bad, bad\n')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, XLA_FLAGS=os.environ.get('DERES_TEST_XLA_FLAGS', '')))
  assert out.returncode == 0, out.stderr[-2000:]
  return json.loads(out.stdout.splitlines()[-1])
