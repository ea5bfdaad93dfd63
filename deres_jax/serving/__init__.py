"""Scoring and serving trained models (docs/serving.md).

  from deres_jax import serving
  scorer = serving.load('model_dir')            # an exported model: no training code, no config
  scorer.score_rows([{'I1': 3, ..., 'C26': 7}])  # -> click probabilities

Modules: `features` (raw rows -> ids), `scorer`, `from_workdir` (in process, from a training
workdir), `export` (jax.export), `bundle` (what every export's directory shares), `exported`
(`load`), `predict` (files), `app` (the ASGI service). Generative retrieval: `genrec_export`
(the whole trie-constrained beam search exported), `retriever` (`recommend(histories, k)`),
`recommend_app` (POST /recommend). Multi-scenario: `multiscenario_export`,
`scenario_scorer`. Inputs: `table_input` (Parquet and quoted CSV), `predict_families`
(history files, scenario rows).

  retriever = serving.load('tiger_model')       # a genrec export
  retriever.recommend([[5, 17, 3]], k=10)        # -> [Recommendation(items, scores, unknown, truncated)]

Only `load` is imported here, so that loading an exported model imports nothing of the training code.
"""
from deres_jax.serving.exported import load  # noqa: F401
