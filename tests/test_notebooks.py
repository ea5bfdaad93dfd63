"""Every notebook in notebooks/ runs top to bottom on CPU with its tiny setting.

A notebook has a code cell tagged `parameters` (as papermill's convention) defining `TINY`;
the test inserts `TINY = True` and `WORKDIR = <a temporary directory>` after it and executes
the notebook in a fresh kernel (which inherits the 8 virtual CPU devices of conftest.py). A
failing cell fails the test with the cell and its error. Committed notebooks carry no outputs.
"""
import glob
import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'notebooks', '*.ipynb')))


@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_with_its_tiny_setting(path, tmp_path):
  nb = nbformat.read(path, as_version=4)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert not any(c.get('outputs') or c.get('execution_count') for c in code), \
      f'{os.path.basename(path)} has outputs committed: clear them'
  tagged = [i for i, c in enumerate(nb.cells) if 'parameters' in c.get('metadata', {}).get('tags', [])]
  assert tagged, f'{os.path.basename(path)} has no cell tagged "parameters" (defining TINY)'
  nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(
      f'TINY = True\nWORKDIR = {str(tmp_path / "run")!r}'))
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute()
