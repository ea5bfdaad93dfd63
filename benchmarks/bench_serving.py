"""Bounded loopback load test of the scoring service, against the in-process scorer in the same run.

  python benchmarks/bench_serving.py                       # trains configs/tiny.py, exports, serves
  python benchmarks/bench_serving.py --workdir=/tmp/quickstart --requests=2000 --rows=32
  python benchmarks/bench_serving.py --genrec_workdir=/tmp/g_tiger --requests=200 --beams=10,50

With --genrec_workdir (a TIGER or SASRec run), the model is exported with --beams as its beam
sizes and POST /recommend is loaded instead: one history per request (drawn uniformly from
the catalogue, 1 to 2L items, seeded), k = each beam size in turn, at each concurrency level;
then the same histories one by one through `serving.load(dir).recommend` in this process.
Every level is bounded by --requests and by --max_seconds.

Exports the workdir's model (a synthetic-data run: the request rows come from its test
split), starts `launch/serve.py` on an ephemeral 127.0.0.1 port in a subprocess, sends a
fixed number of POST /score requests of `--rows` rows at each concurrency level (one
keep-alive connection per client thread) and prints requests/s, rows/s and p50/p99 latency;
then scores the same requests one by one with the exported model in this process (no HTTP,
no batching across requests). The server is stopped at the end, whatever happens.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np
from deres_jax.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  return load_file(os.path.join(ROOT, 'configs', 'tiny.py'))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _load(url, bodies, concurrency, path='/score', max_seconds=None):
  """Sends every body once (or until max_seconds) over `concurrency` keep-alive connections.

  Returns (seconds, latencies of the requests sent)."""
  host, port = url.split('//')[1].split(':')
  latencies, lock, next_index = [], threading.Lock(), [0]
  errors = []

  stop = time.perf_counter() + max_seconds if max_seconds else float('inf')

  def client():
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    while True:
      with lock:
        i = next_index[0]
        next_index[0] += 1
      if i >= len(bodies) or time.perf_counter() > stop:
        break
      t0 = time.perf_counter()
      conn.request('POST', path, bodies[i], {'Content-Type': 'application/json'})
      resp = conn.getresponse()
      payload = resp.read()
      dt = time.perf_counter() - t0
      if resp.status != 200:
        errors.append(payload[:200])
      with lock:
        latencies.append(dt)
    conn.close()

  threads = [threading.Thread(target=client) for _ in range(concurrency)]
  t0 = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise RuntimeError(f'{len(errors)} requests failed, e.g. {errors[0]!r}')
  return time.perf_counter() - t0, np.array(latencies)


def _row(name, n, rows, seconds, lat):
  return (f'{name:<22} {n:>8} {n / seconds:>10.1f} {n * rows / seconds:>10.0f} '
          f'{1e3 * np.percentile(lat, 50):>9.2f} {1e3 * np.percentile(lat, 99):>9.2f}')


def _start_server(model_dir, args, start_timeout_s=600):
  """(base URL, process) of launch/serve.py on an ephemeral loopback port, once /healthz says ok."""
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  server = subprocess.Popen([sys.executable, os.path.join(ROOT, 'launch', 'serve.py'), f'--model={model_dir}',
                             f'--port={port}', f'--max_batch={args.max_batch}', f'--max_wait_ms={args.max_wait_ms}',
                             '--log_level=warning'], env=dict(os.environ, JAX_PLATFORMS='cpu'))
  deadline = time.monotonic() + start_timeout_s
  while True:
    try:
      with urllib.request.urlopen(url + '/healthz', timeout=5) as r:
        if json.loads(r.read())['status'] == 'ok':
          return url, server
    except OSError:
      pass
    if server.poll() is not None or time.monotonic() > deadline:
      server.kill()
      sys.exit('error: the server did not start')
    time.sleep(0.2)


def genrec_main(args):
  """POST /recommend of an exported genrec model at each concurrency and beam size, then in process."""
  from deres_jax.serving import exported, genrec_export  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix='bench_recommend_')
  beams = sorted({int(b) for b in args.beams.split(',')})
  model_dir = os.path.join(tmp, 'model')
  t0 = time.perf_counter()
  manifest = genrec_export.export(args.genrec_workdir, model_dir, platforms=('cpu',), beam_sizes=beams)
  print(f"exported {manifest['system']} ({manifest['num_items']} items, beams {beams}) in "
        f'{time.perf_counter() - t0:.1f}s', flush=True)
  rng = np.random.default_rng(0)
  L, n_items = manifest['max_len'], manifest['num_items']
  histories = [rng.integers(1, n_items + 1, rng.integers(1, 2 * L + 1)).tolist() for _ in range(args.requests)]
  t0 = time.perf_counter()
  url, server = _start_server(model_dir, args)
  print(f'server up (compiled every padded batch size up to {args.max_batch} for each beam) in '
        f'{time.perf_counter() - t0:.1f}s; {os.cpu_count()} CPU cores\n', flush=True)
  print(f'{"":<28} {"requests":>8} {"req/s":>10} {"p50 ms":>9} {"p99 ms":>9}')
  row = lambda name, lat, seconds: (f'{name:<28} {len(lat):>8} {len(lat) / seconds:>10.1f} '
                                    f'{1e3 * np.percentile(lat, 50):>9.2f} {1e3 * np.percentile(lat, 99):>9.2f}')
  try:
    for k in beams:
      bodies = [json.dumps({'history': h, 'k': k}).encode() for h in histories]
      for c in [int(x) for x in args.concurrency.split(',')]:
        _load(url, bodies[:min(16, len(bodies))], c, '/recommend')   # warm-up: connections
        seconds, lat = _load(url, bodies, c, '/recommend', args.max_seconds)
        print(row(f'HTTP, beam {k}, {c} client(s)', lat, seconds), flush=True)
    with urllib.request.urlopen(url + '/healthz', timeout=5) as r:
      health = json.loads(r.read())
  finally:
    server.terminate()
    try:
      server.wait(timeout=30)
    except subprocess.TimeoutExpired:
      server.kill()
  retriever = exported.load(model_dir, batch_size=args.max_batch)
  for k in beams:
    retriever.recommend(histories[:1], k)   # compiles the batch of 8
    lat, t0 = [], time.perf_counter()
    for h in histories:
      if time.perf_counter() - t0 > args.max_seconds:
        break
      t1 = time.perf_counter()
      retriever.recommend([h], k)
      lat.append(time.perf_counter() - t1)
    print(row(f'in-process, beam {k}, 1 by 1', lat, time.perf_counter() - t0), flush=True)
  print(f"\nserver: {health['requests']} requests in {health['batches']} model calls")


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--workdir', default='', help='a synthetic-data training workdir (default: train configs/tiny.py)')
  p.add_argument('--requests', type=int, default=600, help='requests per concurrency level')
  p.add_argument('--rows', type=int, default=16, help='rows per request')
  p.add_argument('--concurrency', default='1,4,16', help='client threads, comma separated')
  p.add_argument('--max_batch', type=int, default=256)
  p.add_argument('--max_wait_ms', type=float, default=2.0)
  p.add_argument('--genrec_workdir', default='', help='a TIGER or SASRec run: load-test POST /recommend')
  p.add_argument('--beams', default='10,50', help='genrec: beam sizes exported, each a k of the load test')
  p.add_argument('--max_seconds', type=float, default=60.0, help='genrec: time bound of each level')
  args = p.parse_args()
  if args.genrec_workdir:
    return genrec_main(args)

  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.serving import export, exported, features, from_workdir  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix='bench_serving_')
  workdir = args.workdir
  if not workdir:
    from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
    workdir = os.path.join(tmp, 'run')
    print('training configs/tiny.py ...', flush=True)
    trainer.train_and_evaluate(_tiny_config(), workdir)
  config = from_workdir.read_config(workdir)
  if config.data.name != 'synthetic':
    sys.exit('error: the benchmark takes its request rows from synthetic data; give a synthetic-data workdir')
  model_dir = os.path.join(tmp, 'model')
  export.export(workdir, model_dir)
  dataset = data_lib.load(config.data)
  test = dataset.splits['test']
  n_rows = min(len(test['label']), args.requests * args.rows)
  csv_path = os.path.join(tmp, 'rows.csv')
  features.write_synthetic_csv(test, dataset.schema, csv_path, rows=n_rows, label=False)
  import csv  # pylint: disable=g-import-not-at-top
  with open(csv_path) as f:
    rows = [{k: (v or None) for k, v in r.items()} for r in csv.DictReader(f)]
  requests = [rows[(i * args.rows) % len(rows):][:args.rows] for i in range(args.requests)]
  requests = [r if len(r) == args.rows else rows[:args.rows] for r in requests]
  bodies = [json.dumps({'rows': r}).encode() for r in requests]

  url, server = _start_server(model_dir, args)
  try:
    print(f'\n{args.requests} requests of {args.rows} rows per level; server max_batch={args.max_batch}, '
          f'max_wait_ms={args.max_wait_ms}; {os.cpu_count()} CPU cores\n')
    print(f'{"":<22} {"requests":>8} {"req/s":>10} {"rows/s":>10} {"p50 ms":>9} {"p99 ms":>9}')
    for c in [int(x) for x in args.concurrency.split(',')]:
      _load(url, bodies[:min(20, len(bodies))], c)  # warm-up: connections, padded batch sizes
      seconds, lat = _load(url, bodies, c)
      print(_row(f'HTTP, {c} client(s)', len(bodies), args.rows, seconds, lat), flush=True)
    with urllib.request.urlopen(url + '/healthz', timeout=5) as r:
      health = json.loads(r.read())
  finally:
    server.terminate()
    try:
      server.wait(timeout=30)
    except subprocess.TimeoutExpired:
      server.kill()

  scorer = exported.load(model_dir, batch_size=args.max_batch)
  for r in requests[:20]:
    scorer.score_rows(r)  # warm-up
  lat = []
  t0 = time.perf_counter()
  for r in requests:
    t1 = time.perf_counter()
    scorer.score_rows(r)
    lat.append(time.perf_counter() - t1)
  print(_row('in-process, 1 by 1', len(requests), args.rows, time.perf_counter() - t0, np.array(lat)))
  print(f"\nserver: {health['requests']} requests in {health['batches']} model calls "
        f"({health['requests'] / max(1, health['batches']):.1f} requests per call)")


if __name__ == '__main__':
  main()
