"""Criteo Display Advertising Challenge (Kaggle `train.txt`) as a `RowSpec`.

45,840,617 rows, tab separated, no header: label, I1..I13 (integer counts), C1..C26 (32-bit
hashes as 8 hex characters); a missing value is an empty field, and some rows come with
their trailing empty fields stripped (e.g. 37 or 38 fields): these are valid and padded as
missing. BARS Criteo_x4 preprocessing (research/ecosystem.md §1.1): integers bucketed by
floor(ln(v)^2) into categories, min_count 10, a random 8:1:1 split.
"""
from deres_jax.data.rows import RowSpec

INTEGER = tuple(f'I{i}' for i in range(1, 14))
CATEGORICAL = tuple(f'C{i}' for i in range(1, 27))
COLUMNS = ('label',) + INTEGER + CATEGORICAL
NUM_ROWS = 45_840_617
MIN_COUNT = 10
# A row needs its label and 13 integer fields; only trailing categorical fields may be stripped.
MIN_FIELDS = 14
FILES = ('train.txt', 'train.txt.gz')  # looked for in the manual directory, in this order

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Criteo Display Advertising Challenge data (dac.tar.gz, 4.3 GB) after accepting
its terms, e.g. from https://ailab.criteo.com/ressources/ or Kaggle
(https://www.kaggle.com/c/criteo-display-ad-challenge/data), extract it and put `train.txt`
(45,840,617 rows, 11 GB; `train.txt.gz` works too) in the manual directory. test.txt has no
labels and is not used.
"""


def spec(keep_dense: bool = False) -> RowSpec:
  """The Criteo row format; `keep_dense` also keeps I1..I13 as raw float 'dense' columns."""
  return RowSpec(name='criteo', columns=COLUMNS, label='label', bucketed=INTEGER,
                 categorical=CATEGORICAL, sep='\t', header=False, min_fields=MIN_FIELDS,
                 keep_dense=keep_dense)
