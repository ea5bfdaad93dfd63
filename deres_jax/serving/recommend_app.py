"""The HTTP recommendation service of a generative-retrieval model (`launch/serve.py`, TIGER/COBRA/SASRec).

  POST /recommend  {"history": [item ids, oldest first], "k": 10, "user": 7}   ("k", "user" optional)
                   -> {"items": [...], "scores": [...], "unknown": 0, "truncated": 0}
                   a batch: a list of such objects (or {"requests": [...]})
                   -> {"results": [{"items": ..., ...}, ...], "unknown": <total>}
  GET  /healthz    -> {"status": "ok", "model": ..., "step": ..., "requests": ..., "batches": ...}

Item ids that are not in the catalogue are dropped before encoding, counted in `unknown`, and
named in a `warning` field; histories longer than the model's cap keep their most recent items
(`truncated` counts the dropped ones). Errors are JSON {"error": "<one sentence>"}: 400
malformed JSON or a body that is neither an object nor a list, 413 a body over
`max_body_bytes` or more than `max_rows` histories, 422 a request that does not fit (no
history, an unknown field, a non-integer id, k beyond the exported beam sizes), 500 an
unexpected failure of the model call (logged; the server goes on).

Dynamic batching and the request handling are the CTR service's (`app.Batcher`,
`app.json_service`): each request is checked and encoded in a worker thread, queued, and
merged with the requests arriving within `max_wait_ms` up to `max_batch` histories; one model
call per distinct beam size in the merged batch.
"""

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from deres_jax.serving import app as app_lib
from deres_jax.serving.retriever import RequestError

FIELDS = ('history', 'k', 'user')


def parse(payload, max_rows: int) -> tuple:
  """(histories, ks, users, batched) of a decoded JSON body; raises app.HttpError with 400/413/422."""
  batched = isinstance(payload, list) or (isinstance(payload, dict) and 'requests' in payload)
  if isinstance(payload, dict) and 'requests' in payload:
    if set(payload) != {'requests'}:
      extra = sorted(set(payload) - {'requests'})
      raise app_lib.HttpError(422, f'a batch is {{"requests": [...]}} alone, got also {extra}')
    payload = payload['requests']
  if not isinstance(payload, (dict, list)):
    raise app_lib.HttpError(400, 'expected a JSON object {"history": [...], "k": 10} or a list of them, '
                         f'got {type(payload).__name__}')
  requests = payload if batched else [payload]
  if len(requests) > max_rows:
    raise app_lib.HttpError(413, f'{len(requests)} histories is more than the limit of {max_rows} per request')
  histories, ks, users = [], [], []
  for n, r in enumerate(requests):
    where = f'request {n}: ' if batched else ''
    if not isinstance(r, dict):
      raise app_lib.HttpError(422, f'{where}expected an object {{"history": [...]}}, got {type(r).__name__}')
    if 'history' not in r:
      raise app_lib.HttpError(422, f'{where}the field "history" (a list of item ids) is missing')
    unknown = sorted(set(r) - set(FIELDS))
    if unknown:
      raise app_lib.HttpError(422, f'{where}unknown fields {unknown}; the fields are {list(FIELDS)}')
    user = r.get('user', 0)
    if isinstance(user, bool) or not isinstance(user, int) or abs(user) >= 2 ** 63:
      raise app_lib.HttpError(422, f'{where}"user" must be a 64-bit integer, got {user!r}')
    histories.append(r['history'])
    ks.append(r.get('k', 10))
    users.append(user)
  return histories, ks, users, batched


def result_json(rec, unknown_ids) -> dict:
  out = {'items': rec.items.tolist(), 'scores': [float(s) for s in rec.scores],
         'unknown': rec.unknown, 'truncated': rec.truncated}
  if unknown_ids:
    shown = ', '.join(str(i) for i in unknown_ids[:5]) + (', ...' if len(unknown_ids) > 5 else '')
    out['warning'] = f'{len(unknown_ids)} item ids not in the catalogue were dropped ({shown})'
  return out


def make_app(retriever, options: app_lib.ServeOptions = app_lib.ServeOptions()) -> Starlette:
  """The ASGI app recommending with `retriever` (a `Retriever`)."""

  def call(encs):
    inputs = np.concatenate([e.inputs for e in encs])
    items, scores = retriever.run_mixed(inputs, np.concatenate([e.beams for e in encs]))
    cuts = np.cumsum([len(e.beams) for e in encs])[:-1]
    return list(zip(np.split(items, cuts), np.split(scores, cuts)))

  def make_batcher():
    return app_lib.Batcher(call, options.max_batch, options.max_wait_ms / 1000, size=lambda e: len(e.beams))

  async def recommend(payload, batcher):
    histories, ks, users, batched = parse(payload, options.max_rows)
    try:
      enc = await run_in_threadpool(retriever.encode, histories, ks, users)
    except RequestError as e:
      raise app_lib.HttpError(422, str(e)) from None
    if len(enc.beams):
      items, scores = await batcher.submit(enc)
    else:
      items, scores = np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32)
    results = [result_json(rec, ids) for rec, ids in zip(retriever.decode(enc, items, scores), enc.unknown)]
    if not batched:
      return JSONResponse(results[0])
    return JSONResponse({'results': results, 'unknown': sum(r['unknown'] for r in results)})

  def health():
    return {'model': retriever.info.get('system'), 'step': retriever.info.get('step'),
            'num_items': retriever.num_items, 'beam_sizes': sorted(retriever.fns)}

  return app_lib.json_service('/recommend', recommend, 'recommendation', options,
                              lambda: warm_up(retriever, options.max_batch), make_batcher, health)


def warm_up(retriever, max_batch: int):
  """Compiles every exported beam size for each padded batch size a request can produce."""
  top = min(max_batch, retriever.batch_size)
  width = retriever.inputs([np.zeros(0, np.int64)], np.zeros(1, np.int64)).shape[1]
  for beam in sorted(retriever.fns):
    size = 8
    while True:
      retriever.run(np.zeros((min(size, top), width), np.int32), beam)
      if size >= top:
        break
      size *= 2
