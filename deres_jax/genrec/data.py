"""Amazon 5-core user sequences: leave-one-out split, training windows, item content features.

Protocol (TIGER, Rajput et al. 2023, Sec. 4; S3-Rec/SASRec lineage):
  * sequence s_u = (i_1, ..., i_n), n >= 5, in time order; item ids 1..N, 0 = padding;
  * test target i_n with history (i_1..i_{n-1}), validation target i_{n-1} with history
    (i_1..i_{n-2}), training part (i_1..i_{n-2}); every history is capped at its last
    `max_len` (20) items;
  * training examples are sliding windows over the training part only:
    (i_{max(1,t-L)}..i_{t-1}) -> i_t for t = 2..n-2. A test or validation target is never a
    training target nor in a training history.

Item content features (`features.source`):
  * 'attributes': TF-IDF over the S3-Rec attribute ids (category path entries, brand),
    tfidf_{ia} = 1/|A_i| * log((1+N)/(1+df_a)) + 1 (smoothed idf), rows L2-normalised, then a
    truncated SVD (numpy, exact) to `dim` dimensions: x_i = U_i S (LSA);
  * 'collaborative': positive PMI of item co-occurrence within `window` positions in the
    training parts only, PPMI_{ij} = max(0, log(c_ij * C / (c_i c_j))), truncated SVD,
    x_i = U_i sqrt(S) (Levy & Goldberg 2014); items never seen in training get zeros;
  * 'npy': a user-supplied [N+1, d] or [N, d] array aligned to item ids;
  * several joined by '+': each block scaled to unit RMS, concatenated.
"""
import dataclasses
import json
import os

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

# Dataset name -> the S3-Rec file stem in DATA_DIR/s3rec/ (integer ids aligned with attributes).
S3REC_NAMES = {'beauty': 'Beauty', 'sports': 'Sports_and_Outdoors', 'toys': 'Toys_and_Games'}


@dataclasses.dataclass
class SequenceData:
  """A leave-one-out split; histories are left-padded with 0 to `max_len`."""
  num_items: int                 # N; item ids are 1..N, 0 = padding
  users: np.ndarray              # [U] user ids (row order of the file)
  train_seqs: list               # U arrays: the training part (all but the last two items)
  val_hist: np.ndarray           # [U, L] int32
  val_target: np.ndarray         # [U] int32
  test_hist: np.ndarray          # [U, L] int32
  test_target: np.ndarray        # [U] int32
  train_count: np.ndarray        # [N+1] int64, how often each item occurs in training parts
  max_len: int


def read_sequences(path: str) -> tuple:
  """Reads 'user item item ...' lines (integer ids); returns (users [U], list of item arrays)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'no sequence file at {path}; point config.data.path at the '
                            'directory holding s3rec/<Dataset>.txt (nothing is downloaded).')
  users, seqs = [], []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) < 4:
        raise ValueError(f'{path}:{lineno}: a user needs at least 3 items for a leave-one-out '
                         f'split, got {len(parts) - 1}.')
      users.append(int(parts[0]))
      seqs.append(np.asarray(parts[1:], dtype=np.int32))
  return np.asarray(users, np.int32), seqs


def _left_pad(seqs, max_len: int) -> np.ndarray:
  out = np.zeros((len(seqs), max_len), np.int32)
  for r, s in enumerate(seqs):
    s = s[-max_len:]
    if len(s):
      out[r, max_len - len(s):] = s
  return out


def leave_one_out(users, seqs, max_len: int = 20, num_items: int = 0) -> SequenceData:
  """Splits each sequence: last item = test, second-to-last = validation, rest = training."""
  num_items = max(num_items, max(int(s.max()) for s in seqs))
  train = [s[:-2] for s in seqs]
  count = np.zeros(num_items + 1, np.int64)
  for s in train:
    np.add.at(count, s, 1)
  return SequenceData(
      num_items=num_items, users=np.asarray(users, np.int32), train_seqs=train,
      val_hist=_left_pad(train, max_len), val_target=np.asarray([s[-2] for s in seqs], np.int32),
      test_hist=_left_pad([s[:-1] for s in seqs], max_len),
      test_target=np.asarray([s[-1] for s in seqs], np.int32), train_count=count, max_len=max_len)


def load(data_dir: str, dataset: str, max_len: int = 20) -> SequenceData:
  """Reads DATA_DIR/s3rec/<Dataset>.txt and splits it (see the module docstring)."""
  if dataset.lower() not in S3REC_NAMES:
    raise ValueError(f'unknown dataset {dataset!r}; expected one of {sorted(S3REC_NAMES)}.')
  users, seqs = read_sequences(os.path.join(data_dir, 's3rec', S3REC_NAMES[dataset.lower()] + '.txt'))
  return leave_one_out(users, seqs, max_len)


def sliding_windows(data: SequenceData, windows: str = 'prefix') -> tuple:
  """(history, next item) pairs inside the training parts, for TIGER-style retrievers.

  windows='prefix': for each position t, the (up to L) items before it: one window per
  transition (TIGER's sliding window). 'subsequence': every contiguous sub-sequence s[i:t] of at
  most L items with target s[t] (GRID's augmentation: histories that start later too, up to L
  windows per transition). Returns (user_row [M], hist [M, L] left-padded, target [M]).
  """
  if windows not in ('prefix', 'subsequence'):
    raise ValueError(f"config.data.windows must be 'prefix' or 'subsequence', got {windows!r}.")
  rows, hists, targets = [], [], []
  for r, s in enumerate(data.train_seqs):
    for t in range(1, len(s)):
      starts = range(max(0, t - data.max_len), t) if windows == 'subsequence' else [max(0, t - data.max_len)]
      for i in starts:
        rows.append(r)
        hists.append(s[i:t])
        targets.append(s[t])
  return (np.asarray(rows, np.int32), _left_pad(hists, data.max_len), np.asarray(targets, np.int32))


def causal_windows(data: SequenceData) -> tuple:
  """Training parts cut into windows of L+1 items for causal models (SASRec).

  Window w gives inputs w[:-1] and targets w[1:] (0 = no loss); windows end at the end of
  the training part and step back by L, so every training transition i_{t-1} -> i_t is a
  target exactly once, with up to L items of history. Returns (inputs [M, L], targets [M, L]).
  """
  L, ins, outs = data.max_len, [], []
  for s in data.train_seqs:
    end = len(s)
    while end >= 2:
      w = s[max(0, end - L - 1):end]
      ins.append(w[:-1])
      outs.append(w[1:])
      end -= L
  return _left_pad(ins, L), _left_pad(outs, L)


def training_items(data: SequenceData) -> np.ndarray:
  """Sorted ids of the items that occur in some training part."""
  return np.flatnonzero(data.train_count[1:] > 0).astype(np.int32) + 1


def _truncated_svd(m, dim: int, seed: int) -> tuple:
  """Top-`dim` singular triplets (U [n, dim], S [dim]) of a dense or scipy.sparse matrix.

  Exact (numpy, via the Gram matrix) for dense matrices with few columns, ARPACK
  (`scipy.sparse.linalg.svds`, scipy comes with jax) otherwise; each U column's sign is fixed
  so that its sum is >= 0 (SVD signs are arbitrary).
  """
  k = min(dim, min(m.shape) - 1)
  if m.shape[1] <= 2000 and not sparse.issparse(m):
    # Few columns: eigenvectors V of the small Gram matrix M^T M give U S = M V exactly.
    evals, v = np.linalg.eigh(m.T @ m)
    v, s = v[:, ::-1][:, :k], np.sqrt(np.maximum(evals[::-1][:k], 0.0))
    u = (m @ v) / np.maximum(s, 1e-12)
  else:
    m = sparse.csr_matrix(m)
    v0 = np.random.default_rng(seed).standard_normal(min(m.shape))
    u, s, _ = sparse_linalg.svds(m.astype(np.float64), k=k, v0=v0)
    order = np.argsort(-s)
    u, s = u[:, order], s[order]
  u = u * np.where(u.sum(0) < 0, -1.0, 1.0)
  if k < dim:  # fewer singular directions than asked for: pad with zeros
    u, s = np.pad(u, ((0, 0), (0, dim - k))), np.pad(s, (0, dim - k))
  return u, s


def attribute_features(path: str, num_items: int, dim: int, seed: int = 0) -> np.ndarray:
  """TF-IDF + truncated SVD of the item attributes (module docstring); [N+1, dim] float32."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'no attribute file at {path}.')
  with open(path) as f:
    attrs = {int(k): v for k, v in json.load(f).items()}
  num_attrs = 1 + max((a for v in attrs.values() for a in v), default=0)
  tf = np.zeros((num_items + 1, num_attrs), np.float64)
  for item, values in attrs.items():
    if 1 <= item <= num_items and values:
      tf[item, values] = 1.0 / len(values)
  df = (tf > 0).sum(0)
  tfidf = tf * (np.log((1.0 + num_items) / (1.0 + df)) + 1.0)
  tfidf /= np.maximum(np.linalg.norm(tfidf, axis=1, keepdims=True), 1e-12)
  u, s = _truncated_svd(tfidf, dim, seed)
  return (u * s).astype(np.float32)


def collaborative_features(data: SequenceData, dim: int, window: int = 3, seed: int = 0) -> np.ndarray:
  """PPMI + truncated SVD of item co-occurrence in the training parts only; [N+1, dim]."""
  n = data.num_items + 1
  rows, cols = [], []
  for s in data.train_seqs:
    for d in range(1, window + 1):
      if len(s) > d:
        rows += [s[:-d], s[d:]]
        cols += [s[d:], s[:-d]]
  if not rows:
    return np.zeros((n, dim), np.float32)
  r, c = np.concatenate(rows), np.concatenate(cols)
  cooc = sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
  cooc.sum_duplicates()
  total, marg = cooc.sum(), np.asarray(cooc.sum(1)).ravel()
  coo = cooc.tocoo()
  pmi = np.log(coo.data * total / (marg[coo.row] * marg[coo.col]))
  keep = pmi > 0
  ppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=(n, n))
  u, s = _truncated_svd(ppmi, dim, seed)
  x = u * np.sqrt(s)
  x[np.diff(ppmi.indptr) == 0] = 0.0  # no training co-occurrence: exactly zero, not SVD round-off
  return x.astype(np.float32)


def item_features(config, data: SequenceData) -> np.ndarray:
  """The [N+1, d] item content vectors named by `config.features` (row 0 = padding).

  `features.source` is one source or several joined by '+' ('attributes+collaborative'): the
  blocks are then each scaled to unit root-mean-square over items 1..N and concatenated.
  """
  blocks = [_one_source(config, data, name) for name in config.features.source.split('+')]
  if len(blocks) == 1:
    return blocks[0]
  return np.concatenate([b / max(float(np.sqrt((b[1:] ** 2).mean())), 1e-12) for b in blocks], 1)


def _one_source(config, data: SequenceData, source: str) -> np.ndarray:
  c = config.features
  if source == 'attributes':
    path = os.path.join(config.data.path, 's3rec',
                        S3REC_NAMES[config.data.dataset.lower()] + '_item2attributes.json')
    return attribute_features(path, data.num_items, c.dim, config.seed)
  if source == 'collaborative':
    return collaborative_features(data, c.dim, c.window, config.seed)
  if source == 'npy':
    x = np.load(c.npy_path).astype(np.float32)
    if x.shape[0] == data.num_items:
      x = np.concatenate([np.zeros((1, x.shape[1]), np.float32), x])
    if x.ndim != 2 or x.shape[0] != data.num_items + 1:
      raise ValueError(f'{c.npy_path} must be [N, d] or [N+1, d] for N={data.num_items} items, '
                       f'got shape {x.shape}.')
    return x
  raise ValueError("features.source must be 'attributes', 'collaborative', 'npy' or several joined by '+', "
                   f'got {source!r}.')
