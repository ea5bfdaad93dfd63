"""`Scorer`: raw rows -> click probabilities, over any function from a feature batch to logits.

The same class wraps the model restored from a training workdir (`from_workdir`) and the
exported one (`load`), so both score through identical encoding, batching and padding; only
the logits function differs. Batches are padded to a power of two (at least 8 rows, at most
`batch_size`): a compiled function is specialised to its shapes, so arbitrary request sizes
would each compile anew, while the padded sizes compile once each.
"""
import numpy as np

from deres_jax.serving import features


class Scorer:
  """Scores rows in the model's raw input format.

  Attributes:
    spec: the `features.InputSpec` (row format and vocabularies).
    info: what is known of the model (name, step, metrics at export, ...).
    batch_size: the most rows per call of the logits function.
  """

  def __init__(self, spec: features.InputSpec, logits_fn, batch_size: int = 1024, info: dict | None = None):
    self.spec, self.info, self.batch_size = spec, dict(info or {}), int(batch_size)
    self._logits_fn = logits_fn  # {'cat': int32 [b, F], 'dense': float32 [b, D]} -> float32 [b]

  def logits(self, cat: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """float32 logits [n] of encoded rows, in batches of at most `batch_size` padded rows."""
    n = len(cat)
    out = np.empty(n, np.float32)
    for start in range(0, n, self.batch_size):
      c, d = cat[start:start + self.batch_size], dense[start:start + self.batch_size]
      m = len(c)
      size = min(self.batch_size, max(8, 1 << (m - 1).bit_length()))
      batch = {'cat': np.zeros((size, c.shape[1]), np.int32)}  # padding rows: OOV ids, missing dense
      batch['cat'][:m] = c
      if self.spec.num_dense:
        batch['dense'] = np.full((size, d.shape[1]), np.nan, np.float32)
        batch['dense'][:m] = d
      out[start:start + m] = np.asarray(self._logits_fn(batch), np.float32)[:m]
    return out

  def probabilities(self, cat: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """Click probabilities [n] (float64 sigmoid of the float32 logits)."""
    return 1.0 / (1.0 + np.exp(-self.logits(cat, dense).astype(np.float64)))

  def score_encoded(self, enc: features.Encoded) -> np.ndarray:
    return self.probabilities(enc.cat, enc.dense)

  def score_rows(self, rows) -> np.ndarray:
    """Probabilities of JSON-like rows ({column: value}); raises features.SchemaError."""
    return self.score_encoded(features.encode_rows(self.spec, rows))
