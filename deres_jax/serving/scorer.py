"""`Scorer`: raw rows -> click probabilities, over any function from a feature batch to logits.

The same class wraps the model restored from a training workdir (`from_workdir`) and the
exported one (`load`), so both score through identical encoding, batching and padding; only
the logits function differs. Batches are padded to a power of two (at least 8 rows, at most
`batch_size`): a compiled function is specialised to its shapes, so arbitrary request sizes
would each compile anew, while the padded sizes compile once each. A model with sequence
fields also gets 'seq' (int32 [b, F_seq, L], left-padded with -1 as in training); padding rows
hold empty lists.
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
    # {'cat': int32 [b, F], 'dense': float32 [b, D], 'seq': int32 [b, F_seq, L]} -> float32 [b]
    self._logits_fn = logits_fn

  def logits(self, cat: np.ndarray, dense: np.ndarray, seq: np.ndarray | None = None) -> np.ndarray:
    """float32 logits [n] of encoded rows, in batches of at most `batch_size` padded rows.

    `seq`: int32 [n, F_seq, L] sequence ids (-1 = padding), required when the model has sequence fields.
    """
    has_seq = bool(self.spec.row_spec.sequence)
    if has_seq and seq is None:
      raise ValueError(f'the model reads the sequence fields {list(self.spec.row_spec.sequence)}: pass their '
                       'ids (seq, int32 [n, F_seq, L], -1 = padding)')
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
      if has_seq:  # padding rows: empty lists
        batch['seq'] = np.full((size, *seq.shape[1:]), -1, np.int32)
        batch['seq'][:m] = seq[start:start + self.batch_size]
      out[start:start + m] = np.asarray(self._logits_fn(batch), np.float32)[:m]
    return out

  def probabilities(self, cat: np.ndarray, dense: np.ndarray, seq: np.ndarray | None = None) -> np.ndarray:
    """Click probabilities [n] (float64 sigmoid of the float32 logits)."""
    return 1.0 / (1.0 + np.exp(-self.logits(cat, dense, seq).astype(np.float64)))

  def score_encoded(self, enc: features.Encoded) -> np.ndarray:
    return self.probabilities(enc.cat, enc.dense, enc.seq)

  def score_rows(self, rows) -> np.ndarray:
    """Probabilities of JSON-like rows ({column: value}); raises features.SchemaError."""
    return self.score_encoded(features.encode_rows(self.spec, rows))
