"""HTTP scoring service for an exported model (Starlette on uvicorn, dynamic batching).

  python launch/serve.py --model=/tmp/quickstart_model --port=8080
  curl -s localhost:8080/healthz
  curl -s -X POST localhost:8080/score -H 'Content-Type: application/json' \
      -d '{"rows": [{"I1": 3, "I2": null, ..., "C26": 17}]}'

  python launch/serve.py --model=/tmp/tiger_model --port=8080     # a genrec export: POST /recommend
  curl -s -X POST localhost:8080/recommend -d '{"history": [5, 17, 3], "k": 10}'

Listens on 127.0.0.1 unless --host says otherwise. docs/serving.md has the API and limits.
"""
import sys

from absl import app
from absl import flags

_MODEL = flags.DEFINE_string('model', None, 'Exported model directory (launch/export.py).')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on (0.0.0.0: every interface).')
_PORT = flags.DEFINE_integer('port', 8080, 'Port.')
_MAX_BATCH = flags.DEFINE_integer('max_batch', 256, 'Rows (CTR) or histories (genrec) per model call '
                                   '(requests are merged up to this).')
_MAX_WAIT = flags.DEFINE_float('max_wait_ms', 2.0, 'How long a request waits for others to join its batch.')
_MAX_BODY = flags.DEFINE_integer('max_body_bytes', 1 << 20, 'Larger request bodies get 413.')
_MAX_ROWS = flags.DEFINE_integer('max_rows', 4096, 'Rows per request (more: 413).')
_LOG = flags.DEFINE_enum('log_level', 'info', ['debug', 'info', 'warning', 'error'], 'uvicorn log level.')
flags.mark_flags_as_required(['model'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    from deres_jax.serving import app as serving_app  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    print(f"error: the HTTP service needs Starlette and uvicorn ({e}): pip install -e '.[serve]'",
          file=sys.stderr)
    sys.exit(2)
  from deres_jax.serving import exported  # pylint: disable=g-import-not-at-top
  try:
    scorer = exported.load(_MODEL.value, batch_size=_MAX_BATCH.value)
  except (exported.ModelDirError, OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  options = serving_app.ServeOptions(max_batch=_MAX_BATCH.value, max_wait_ms=_MAX_WAIT.value,
                                     max_body_bytes=_MAX_BODY.value, max_rows=_MAX_ROWS.value)
  if hasattr(scorer, 'recommend'):  # a genrec export: POST /recommend
    print(f"serving {scorer.info.get('system')} (step {scorer.info.get('step')}, {scorer.num_items} items, "
          f"k up to {scorer.max_k}): compiling, then http://{_HOST.value}:{_PORT.value}/recommend", flush=True)
  else:
    print(f"serving {scorer.info.get('model')} (step {scorer.info.get('step')}) on "
          f'http://{_HOST.value}:{_PORT.value}/score', flush=True)
  serving_app.serve(scorer, _HOST.value, _PORT.value, options, _LOG.value)


if __name__ == '__main__':
  app.run(main)
