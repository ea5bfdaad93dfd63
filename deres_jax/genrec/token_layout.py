"""The token ids of TIGER's inputs and outputs (numpy only; the model is tiger.py).

  0 pad, 1 bos, 2 eos, 3 + offset_l + c for code c at ID position l, then the user tokens,
  then SemanticBPE subwords (if any).
`TokenLayout` maps SID tables and users to encoder and decoder tokens (the user token right
before the history; variable-length IDs back to back with `compact`); `level_mask`,
`position_tokens` and `token_mask` give the tokens valid at each decoder position for the
model's 'levels' and 'positions' outputs. `tiger` re-exports every name here.
"""
import numpy as np

PAD, BOS, EOS, FIRST_CODE = 0, 1, 2, 3


def compact_left(tokens: np.ndarray) -> np.ndarray:
  """[B, S] tokens with every PAD moved to the left, the other tokens kept in order (stable). An
  encoder input whose only PADs are left padding is unchanged (fixed-length IDs)."""
  order = np.argsort(tokens != PAD, axis=1, kind='stable')
  return np.take_along_axis(tokens, order, axis=1)


class TokenLayout:
  """Maps SID tables and users to token ids (see the module docstring)."""

  def __init__(self, level_sizes, num_user_tokens: int, num_merged: int = 0, user_token: str = 'adjacent',
               compact: bool = False):
    if user_token not in ('adjacent', 'first'):
      raise ValueError(f"user_token must be 'adjacent' or 'first', got {user_token!r}.")
    if compact and user_token != 'adjacent':
      raise ValueError("compact ID tokens (data.compact_ids) need user_token='adjacent'.")
    self.user_token = user_token   # 'adjacent': [pad.., u, items] | 'first': [u, pad.., items] (older runs)
    self.compact = compact         # variable-length IDs back to back (the PAD inside blocks moved left)
    self.level_sizes = tuple(int(k) for k in level_sizes)
    self.offsets = FIRST_CODE + np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]).astype(np.int32)
    self.first_user = FIRST_CODE + int(sum(self.level_sizes))
    self.num_user_tokens = num_user_tokens
    # SemanticBPE subwords (semantic_bpe.py) take the ids after the user tokens.
    self.first_merged = self.first_user + num_user_tokens
    self.vocab_size = self.first_merged + num_merged

  def item_tokens(self, codes: np.ndarray) -> np.ndarray:
    """SID codes [N+1, m] (-1 = no token; row 0 = padding) -> tokens [N+1, m], PAD after each ID.

    A variable-length ID (CAPSID) has -1 at the positions it does not use; its tokens are moved
    to the front (each position keeps its own vocabulary block, so the order stays readable).
    """
    codes = np.asarray(codes)
    tok = np.where(codes < 0, PAD, codes + self.offsets).astype(np.int32)
    order = np.argsort(tok == PAD, axis=1, kind='stable')  # used positions first, in order
    return np.take_along_axis(tok, order, axis=1)

  def encoder_input(self, users: np.ndarray, hist: np.ndarray, item_tok: np.ndarray) -> np.ndarray:
    """[B] user ids and [B, L] left-padded histories -> [B, 1 + L*m] encoder tokens, left-padded:
    the user token right before the first history item (the last token for an empty history)."""
    hist = np.asarray(hist)
    B, L = hist.shape
    m = item_tok.shape[1]
    user_tok = self.first_user + np.asarray(users) % self.num_user_tokens
    out = np.concatenate([np.zeros((B, 1), np.int32), item_tok[hist].reshape(B, -1)], 1).astype(np.int32)
    first = np.where((hist > 0).any(1), np.argmax(hist > 0, 1), L)   # the first history item's slot
    slot = first * m if self.user_token == 'adjacent' else np.zeros(B, np.int64)
    out[np.arange(B), slot] = user_tok   # the pad slot before the first item (or slot 0: 'first')
    return compact_left(out) if self.compact else out

  @staticmethod
  def trim(enc: np.ndarray, hist_len: int, tokens_per_item: int) -> np.ndarray:
    """Encoder tokens [B, 1 + L*m] cut to their last 1 + hist_len*m columns (the user token and
    up to hist_len history items): only left padding goes when no history is longer."""
    return enc[:, max(0, enc.shape[1] - 1 - hist_len * tokens_per_item):]

  def training_batch(self, rows: dict, item_tok: np.ndarray, bucket_items: int = 0) -> dict:
    """Training rows {user [B], hist [B, L], target [B]} -> {enc, dec_in, dec_out} tokens; with
    bucket_items > 0 the encoder input is cut to the longest history rounded up to a multiple of
    bucket_items (a few shapes, so a few compilations)."""
    dec_in, dec_out = self.decoder_io(rows['target'], item_tok)
    enc = self.encoder_input(rows['user'], rows['hist'], item_tok)
    if bucket_items:
      if self.user_token != 'adjacent':
        raise ValueError("cutting left padding needs user_token='adjacent'")
      # The global batch's bucket (BatchIterator's 'bucket' column) when given, so every process of a
      # multi-host batch cuts to the same width; else this batch's longest history.
      longest = (int(rows['bucket'].max()) * bucket_items if 'bucket' in rows
                 else int((rows['hist'] > 0).sum(1).max()))
      enc = self.trim(enc, min(rows['hist'].shape[1], -(-longest // bucket_items) * bucket_items),
                      item_tok.shape[1])
    return {'enc': enc, 'dec_in': dec_in, 'dec_out': dec_out}

  def decoder_io(self, target: np.ndarray, item_tok: np.ndarray) -> tuple:
    """Next items [B] -> decoder inputs (bos, s_1..s_n) and targets (s_1..s_n, eos), [B, m+1], PAD-filled."""
    s = item_tok[target]
    bos = np.full((len(s), 1), BOS, np.int32)
    out = np.concatenate([s, np.zeros((len(s), 1), np.int32)], 1)
    out[np.arange(len(s)), (s != PAD).sum(1)] = EOS   # eos right after each ID, PAD after it
    return np.concatenate([bos, s], 1), out


def position_tokens(item_tok: np.ndarray) -> tuple:
  """Per decoder position l (0..m), the sorted token ids that occur at position l of an ID in
  item_tok [N+1, m] (row 0 = padding; PAD after each ID), and eos where an ID of length l ends."""
  tok = np.asarray(item_tok)[1:]
  m = tok.shape[1]
  length = (tok != PAD).sum(1)
  out = []
  for l in range(m + 1):
    valid = set(np.unique(tok[:, l][tok[:, l] != PAD]).tolist()) if l < m else set()
    if (length == l).any():
      valid.add(EOS)
    out.append(tuple(sorted(int(t) for t in valid)))
  return tuple(out)


def token_mask(tokens_per_position, vocab_size: int) -> np.ndarray:
  """[m+1, V] booleans from `position_tokens`."""
  mask = np.zeros((len(tokens_per_position), vocab_size), bool)
  for l, toks in enumerate(tokens_per_position):
    mask[l, list(toks)] = True
  return mask


def level_mask(level_offsets, level_sizes, vocab_size: int) -> np.ndarray:
  """[m+1, V] booleans: decoder position l may emit level l's codes (l < m), the last only eos."""
  m = len(level_sizes)
  mask = np.zeros((m + 1, vocab_size), bool)
  for l, (o, k) in enumerate(zip(level_offsets, level_sizes)):
    mask[l, o:o + k] = True
  mask[m, EOS] = True
  return mask
