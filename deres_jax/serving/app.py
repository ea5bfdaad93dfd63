"""The HTTP scoring service (`launch/serve.py`): Starlette on uvicorn, with dynamic batching.

  POST /score    {"rows": [{column: value, ...}, ...]}  (or a bare list of rows)
                 -> {"scores": [p, ...], "unseen": <values scored with the OOV id>}
  GET  /healthz  -> {"status": "ok", "model": ..., "step": ..., "requests": ..., "batches": ...}

Rows are in the model's raw input format (`features.encode_rows`: every feature column,
null = missing; a sequence field as a JSON list of ids or the CSV's `12|45|78` text). A
multi-scenario model (`scenario_scorer.py`) reads rows with a `scenario` column, in raw values
when its export saved vocabularies (a dataset read from CSV/Parquet), else in its encoded
schema (ids), and the response also counts `unseen_scenarios` (rows of a scenario not seen in
training, scored by the shared path). Errors are JSON {"error": "<one sentence>"}: 400
malformed JSON or payload, 413 a body over `max_body_bytes` or more than `max_rows` rows, 422 a
row that does not fit the schema (a missing or unknown field, a bad number, a sequence element
that is not an id, an empty list element), 500 an unexpected failure of the model call
(logged; the server goes on).

Dynamic batching: each request is encoded in a worker thread, then queued; one batcher task
takes the first waiting request, adds the requests that arrive within `max_wait_ms` up to
`max_batch` rows, scores them in one model call (in its own thread, so the event loop keeps
accepting) and hands each request its slice. Under light load a request waits at most
`max_wait_ms`; under heavy load batches fill up and the model runs fewer, larger calls.
"""
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import socket
import threading
import time

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

from deres_jax.serving import features

log = logging.getLogger('deres_jax.serving')


@dataclasses.dataclass(frozen=True)
class ServeOptions:
  """Limits and batching of the service."""
  max_batch: int = 256            # rows per model call (requests are merged up to this)
  max_wait_ms: float = 2.0        # how long the first queued request waits for others to join
  max_body_bytes: int = 1 << 20   # larger bodies get 413 before they are parsed
  max_rows: int = 4096            # rows per request (more: 413)
  max_concurrency: int = 512      # open connections + tasks before uvicorn answers 503


class HttpError(Exception):
  """An answer with an error status and a one-sentence message."""

  def __init__(self, status, message):
    super().__init__(message)
    self.status, self.message = status, message


class Batcher:
  """Merges queued jobs into model calls of at most `max_batch` rows.

  `call(jobs)` runs in the model thread and returns one result per job; `size(job)` is a job's
  row count. The CTR service queues encoded rows (`score`); the recommendation service
  (recommend_app.py) queues encoded histories.
  """

  def __init__(self, call, max_batch: int, max_wait_s: float, size=len):
    self.call, self.size, self.max_batch, self.max_wait_s = call, size, max_batch, max_wait_s
    self.queue = asyncio.Queue()
    self.batches = 0
    self._get = None  # the pending queue.get(): kept across timeouts, so no item is ever lost
    self._model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='score')

  @classmethod
  def for_scorer(cls, scorer, max_batch: int, max_wait_s: float):
    """A Batcher of encoded rows (features.Encoded) -> probabilities, for a CTR `Scorer`."""
    def call(encs):
      seq = np.concatenate([e.seq for e in encs]) if encs[0].seq is not None else None
      probs = scorer.probabilities(np.concatenate([e.cat for e in encs]), np.concatenate([e.dense for e in encs]),
                                   seq)
      return np.split(probs, np.cumsum([len(e.line) for e in encs])[:-1])
    return cls(call, max_batch, max_wait_s, size=lambda e: len(e.line))

  async def submit(self, job):
    future = asyncio.get_running_loop().create_future()
    await self.queue.put((job, future))
    return await future

  score = submit  # the CTR name

  async def _next(self, timeout):
    if self._get is None:
      self._get = asyncio.ensure_future(self.queue.get())
    done, _ = await asyncio.wait({self._get}, timeout=timeout)
    if not done:
      return None
    item, self._get = self._get.result(), None
    return item

  async def run(self):
    loop = asyncio.get_running_loop()
    while True:
      items = [await self._next(None)]
      rows, deadline = self.size(items[0][0]), loop.time() + self.max_wait_s
      while rows < self.max_batch:
        item = await self._next(max(0.0, deadline - loop.time()))
        if item is None:
          break
        items.append(item)
        rows += self.size(item[0])
      try:
        results = await loop.run_in_executor(self._model_thread, self.call, [job for job, _ in items])
      except Exception as e:  # pylint: disable=broad-except  # fail these requests, keep serving
        log.exception('model call failed')
        for _, future in items:
          if not future.done():
            future.set_exception(e)
        continue
      self.batches += 1
      for (_, future), result in zip(items, results):
        if not future.done():  # the client may have gone
          future.set_result(result)

  def close(self):
    if self._get is not None:
      self._get.cancel()
    self._model_thread.shutdown(wait=False, cancel_futures=True)


async def read_body(request, limit: int) -> bytes:
  length = request.headers.get('content-length')
  if length is not None and (not length.isdigit() or int(length) > limit):
    raise HttpError(413, f'the request body is larger than the limit of {limit} bytes')
  body, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise HttpError(413, f'the request body is larger than the limit of {limit} bytes')
    body.append(chunk)
  return b''.join(body)


async def read_json(request, limit: int):
  """The decoded JSON body of a request: 413 over `limit` bytes, 400 if it is not JSON."""
  body = await read_body(request, limit)
  try:
    return json.loads(body)
  except (ValueError, UnicodeDecodeError) as e:
    raise HttpError(400, f'malformed JSON: {e}') from None


def json_service(path: str, handle, what: str, options: ServeOptions, warm, make_batcher, health) -> Starlette:
  """The Starlette app of a batched JSON service (POST /score, POST /recommend).

  Before the first request `warm()` runs in a worker thread (it compiles every padded batch
  size), then `make_batcher()`'s Batcher runs until shutdown. POST `path` decodes the JSON body
  (within `options.max_body_bytes`) and answers `await handle(payload, batcher)`: an HttpError
  becomes {"error": ...} with its status, any other failure a logged 500 '<what> failed: ...'.
  GET /healthz answers the status, `health()`'s fields and the request and batch counts.
  """
  state = {'batcher': None, 'requests': 0}

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    await run_in_threadpool(warm)
    batcher = state['batcher'] = make_batcher()
    task = asyncio.create_task(batcher.run())
    try:
      yield
    finally:
      task.cancel()
      batcher.close()

  async def endpoint(request):
    state['requests'] += 1
    try:
      payload = await read_json(request, options.max_body_bytes)
      return await handle(payload, state['batcher'])
    except HttpError as e:
      return JSONResponse({'error': e.message}, status_code=e.status)
    except Exception as e:  # pylint: disable=broad-except  # one sentence to the client, the trace to the log
      log.exception('%s failed', what)
      return JSONResponse({'error': f'{what} failed: {type(e).__name__}: {e}'}, status_code=500)

  async def healthz(request):
    del request
    b = state['batcher']
    return JSONResponse({'status': 'ok' if b is not None else 'starting', **health(),
                         'requests': state['requests'], 'batches': b.batches if b else 0})

  return Starlette(routes=[Route(path, endpoint, methods=['POST']),
                           Route('/healthz', healthz, methods=['GET'])], lifespan=lifespan)


def make_app(scorer, options: ServeOptions = ServeOptions()) -> Starlette:
  """The ASGI app scoring with `scorer` (a CTR `Scorer` or a multi-scenario `ScenarioScorer`)."""
  # A multi-scenario model: rows carry a `scenario`; jobs are (batch, OOV per field, rows' scenario ids).
  scenario = hasattr(scorer, 'scenario_names')

  def scenario_call(jobs):
    batch = {k: np.concatenate([j[0][k] for j in jobs]) for k in jobs[0][0]}
    probs = 1.0 / (1.0 + np.exp(-scorer.logits(batch).astype(np.float64)))
    return np.split(probs, np.cumsum([len(j[2]) for j in jobs])[:-1])

  def encode(payload):
    if not scenario:
      return features.encode_rows(scorer.spec, payload)
    batch, oov, unseen = scorer.encode(payload)
    return batch, oov, batch['scenario'], unseen

  def make_batcher():
    if scenario:
      return Batcher(scenario_call, options.max_batch, options.max_wait_ms / 1000, size=lambda e: len(e[2]))
    return Batcher.for_scorer(scorer, options.max_batch, options.max_wait_ms / 1000)

  async def score(payload, batcher):
    if isinstance(payload, dict):
      if 'rows' not in payload:
        raise HttpError(400, 'expected a JSON object {"rows": [...]} or a list of rows')
      payload = payload['rows']
    if not isinstance(payload, list):
      raise HttpError(400, f'expected a list of rows, got {type(payload).__name__}')
    if len(payload) > options.max_rows:
      raise HttpError(413, f'{len(payload)} rows is more than the limit of {options.max_rows} per request')
    try:
      enc = await run_in_threadpool(encode, payload)
    except features.SchemaError as e:
      raise HttpError(422, str(e)) from None
    if scenario:   # unseen: values scored with the OOV id; unseen_scenarios: rows on the shared path
      probs = await batcher.submit(enc) if len(enc[2]) else np.zeros(0)
      return JSONResponse({'scores': probs.tolist(), 'unseen': int(enc[1].sum()), 'unseen_scenarios': enc[3]})
    probs = await batcher.score(enc) if len(enc.line) else np.zeros(0)
    return JSONResponse({'scores': probs.tolist(), 'unseen': int(enc.oov.sum())})

  # Compile every padded batch size before the first request (sizes 8, 16, ... max_batch).
  return json_service('/score', score, 'scoring', options, lambda: warm_up(scorer, options.max_batch),
                      make_batcher, lambda: {'model': scorer.info.get('model'), 'step': scorer.info.get('step')})


def warm_up(scorer, max_batch: int):
  """Compiles the model for each padded batch size a request can produce."""
  size = 8
  while True:
    n = min(size, max_batch, scorer.batch_size)
    if hasattr(scorer, 'scenario_names'):
      batch = {'cat': np.zeros((n, len(scorer.cat_names)), np.int32),
               'dense': np.zeros((n, len(scorer.dense_names)), np.float32), 'scenario': np.zeros(n, np.int32)}
      if getattr(scorer, 'seq_names', ()):
        batch['seq'] = np.full((n, len(scorer.seq_names), scorer.seq_len), -1, np.int32)
      scorer.logits(batch)
    else:
      spec = scorer.spec
      seq = np.full((n, len(spec.seq_vocab), spec.seq_len), -1, np.int32) if spec.row_spec.sequence else None
      scorer.logits(np.zeros((n, len(spec.vocab)), np.int32), np.full((n, spec.num_dense), np.nan, np.float32), seq)
    if n >= min(max_batch, scorer.batch_size):
      return
    size *= 2


def uvicorn_server(scorer, host: str = '127.0.0.1', port: int = 8080, options: ServeOptions = ServeOptions(),
                   log_level: str = 'info'):
  """A `uvicorn.Server` for the app (`.run()` blocks; `serve` and `background` call it).

  `scorer` is a CTR `Scorer` or a `ScenarioScorer` (POST /score), or a genrec `Retriever`
  (POST /recommend).
  """
  import uvicorn  # pylint: disable=g-import-not-at-top
  if hasattr(scorer, 'recommend'):
    from deres_jax.serving import recommend_app  # pylint: disable=g-import-not-at-top
    asgi = recommend_app.make_app(scorer, options)
  else:
    asgi = make_app(scorer, options)
  config = uvicorn.Config(asgi, host=host, port=port, log_level=log_level,
                          limit_concurrency=options.max_concurrency, timeout_keep_alive=5,
                          access_log=log_level == 'debug')
  return uvicorn.Server(config)


def serve(scorer, host: str = '127.0.0.1', port: int = 8080, options: ServeOptions = ServeOptions(),
          log_level: str = 'info'):
  """Serves until interrupted (SIGINT/SIGTERM: uvicorn finishes the open requests, then exits)."""
  uvicorn_server(scorer, host, port, options, log_level).run()


@contextlib.contextmanager
def background(scorer, options: ServeOptions = ServeOptions(), start_timeout_s: float = 120.0):
  """Serves on an ephemeral loopback port in a thread; yields the base URL, stops on exit."""
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind(('127.0.0.1', 0))
  port = sock.getsockname()[1]
  server = uvicorn_server(scorer, '127.0.0.1', port, options, log_level='warning')
  thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
  thread.start()
  deadline = time.monotonic() + start_timeout_s
  while not server.started:
    if not thread.is_alive() or time.monotonic() > deadline:
      server.should_exit = True
      sock.close()
      raise RuntimeError('the scoring server did not start')
    time.sleep(0.02)
  try:
    yield f'http://127.0.0.1:{port}'
  finally:
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()
