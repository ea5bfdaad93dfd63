"""Resumable, shuffled batches over numpy columns, and their placement on a device mesh.

The iterator's whole state is one integer, `position` = the number of batches already
taken (the training step), so checkpointing the step checkpoints the data order too:
batch k always holds rows perm_e[i*B:(i+1)*B] of epoch e = k // batches_per_epoch, with
perm_e a permutation drawn from (seed, e).
"""
import jax
import numpy as np

TRAIN_COLUMNS = ('label', 'dense', 'cat', 'scenario', 'seq')  # 'seq': [B, F_seq, L] lists


class BatchIterator:
  """Yields this process's share of each global batch as a dict of numpy arrays.

  `columns`: the keys of `split` to batch (None = all of them; every one has the rows on axis 0).
  `buckets`: an optional int key per row (e.g. a history-length bucket). Each epoch then drops
  its remainder at random, sorts the rest by key (random order inside a key), cuts it into
  batches and shuffles the batches: every batch holds one key, except where two keys meet, so a
  padded model input can be cut to the batch's longest row (length bucketing); each batch then
  also carries 'bucket', the global batch's largest key, the same on every process. Still a fixed
  function of (seed, epoch), so resumes stay exact.
  """

  def __init__(self, split: dict, batch_size: int, seed: int = 0, shuffle: bool = True,
               position: int = 0, process_index: int = 0, process_count: int = 1,
               columns=TRAIN_COLUMNS, buckets=None):
    self.columns = {k: v for k, v in split.items() if columns is None or k in columns}
    self.num_rows = len(next(iter(self.columns.values())))
    if batch_size > self.num_rows:
      raise ValueError(f'batch size {batch_size} is larger than the training split ({self.num_rows} '
                       f'rows): pass a smaller --config.train.batch_size (at most {self.num_rows}).')
    if batch_size % process_count:
      raise ValueError(f'batch size {batch_size} is not divisible by {process_count} processes')
    self.batch_size = batch_size
    self.batches_per_epoch = self.num_rows // batch_size  # the remainder of an epoch is dropped
    self.seed, self.shuffle, self.position = seed, shuffle, position
    self.local = slice(process_index * batch_size // process_count,
                       (process_index + 1) * batch_size // process_count)
    if buckets is not None and len(buckets) != self.num_rows:
      raise ValueError(f'buckets has {len(buckets)} keys for {self.num_rows} rows.')
    self.buckets = None if buckets is None else np.asarray(buckets)
    self._epoch, self._perm = None, None

  def _permutation(self, epoch):
    if self._epoch != epoch:
      self._epoch = epoch
      rng = np.random.default_rng([self.seed, epoch])
      perm = rng.permutation(self.num_rows) if self.shuffle else np.arange(self.num_rows)
      if self.buckets is not None:
        n = self.batches_per_epoch * self.batch_size
        kept = perm[:n]
        kept = kept[np.argsort(self.buckets[kept], kind='stable')]
        order = rng.permutation(self.batches_per_epoch) if self.shuffle else np.arange(self.batches_per_epoch)
        perm = kept.reshape(self.batches_per_epoch, self.batch_size)[order].reshape(-1)
      self._perm = perm
    return self._perm

  @property
  def epoch(self) -> float:
    return self.position / self.batches_per_epoch

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    epoch, i = divmod(self.position, self.batches_per_epoch)
    # Sorted gathers are cache friendlier (the batch is a set); sort the global batch, then
    # take this process's slice, so the processes' slices concatenate to the global batch.
    idx = np.sort(self._permutation(epoch)[i * self.batch_size:(i + 1) * self.batch_size])
    bucket = None if self.buckets is None else int(self.buckets[idx].max())   # of the global batch
    idx = idx[self.local]
    self.position += 1
    batch = {k: v[idx] for k, v in self.columns.items()}
    if bucket is not None:   # every process gets the global batch's largest key (one padded width)
      batch['bucket'] = np.full(len(idx), bucket, np.int32)
    return batch


def eval_batches(split: dict, batch_size: int, process_index: int = 0, process_count: int = 1,
                 columns=TRAIN_COLUMNS):
  """Yields (batch, mask) covering every row once; the last batch is padded (mask = 0)."""
  n = len(split['label'])
  cols = {k: v for k, v in split.items() if k in columns}
  per_proc = batch_size // process_count
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)[process_index * per_proc:(process_index + 1) * per_proc]
    mask = idx < n
    idx = np.where(mask, idx, 0)
    yield {k: v[idx] for k, v in cols.items()}, mask.astype(np.float32)


def to_global(batch: dict, sharding) -> dict:
  """Assembles each process's local rows into global arrays sharded over the batch axis."""
  def put(x):
    spec = jax.sharding.PartitionSpec(*sharding.spec, *([None] * (x.ndim - len(sharding.spec))))
    s = jax.sharding.NamedSharding(sharding.mesh, spec)
    return jax.make_array_from_process_local_data(s, x)
  # This is the loop's one deliberate host-to-device copy; with several processes JAX does it
  # through a path that transfer_guard('disallow') would count as implicit.
  with jax.transfer_guard_host_to_device('allow'):
    return jax.tree.map(put, batch)


class Prefetch:
  """Places the next `size` batches on the devices in a background thread.

  The host work of batch k+1 (gather, host-to-device copy) overlaps the device step of
  batch k. The underlying iterator runs ahead of the training step; the data position that
  is checkpointed is the step, not the iterator's, so resuming stays exact.
  """

  def __init__(self, batches, sharding, size: int = 2):
    import queue  # pylint: disable=g-import-not-at-top
    import threading  # pylint: disable=g-import-not-at-top
    self._queue = queue.Queue(maxsize=max(1, size))
    self._stop = threading.Event()

    def work():
      try:
        for batch in batches:
          item = to_global(batch, sharding)
          while not self._stop.is_set():
            try:
              self._queue.put(item, timeout=0.1)
              break
            except queue.Full:
              continue
          if self._stop.is_set():
            return
      except Exception as e:  # pylint: disable=broad-except  # re-raised in the consumer
        self._queue.put(e)

    self._thread = threading.Thread(target=work, daemon=True, name='prefetch')
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    return item

  def close(self):
    """Stops the worker and waits for it, so no thread calls into JAX after the loop."""
    self._stop.set()
    while self._thread.is_alive():
      try:  # unblock a worker waiting on a full queue
        self._queue.get_nowait()
      except Exception:  # pylint: disable=broad-except
        pass
      self._thread.join(timeout=0.05)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
