"""Scores a file of new rows with a trained model of any family: one output line per input row, in order.

  python launch/predict.py --workdir=/tmp/quickstart --input=new.csv --output=scores.csv
  python launch/predict.py --model=/tmp/quickstart_model --input=new.txt.gz --output=scores.csv --strict
  python launch/predict.py --model=/tmp/quickstart_model --input=new.parquet --output=scores.csv
  python launch/predict.py --model=/tmp/tiger_model --input=histories.txt --output=recs.csv --k=10
  python launch/predict.py --model=/tmp/ms_model --input=rows.parquet --output=scores.csv
  python launch/predict.py --workdir=/tmp/ms_mine --input=new_log.csv --output=scores.csv   # raw values

The input is in the training data's raw format (the label column may be left out; history
columns as `12|45|78`, or Parquet list columns). The saved vocabularies and preprocessing
are applied; unseen categories get the OOV id and are counted; bad rows are counted and
skipped (an empty probability in their line) or, with --strict, stop the run. A genrec model
reads one history per row and writes the top --k items with scores; a multi-scenario model
reads rows with a scenario column: for a model trained on CSV/Parquet files, a file of the
same format with raw values (serving/predict_families.py).
docs/serving.md.
"""
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (the model it evaluated with).')
_MODEL = flags.DEFINE_string('model', None, 'Or: an exported model directory (launch/export.py).')
_INPUT = flags.DEFINE_string('input', None, 'New rows, in the training data format (plain or .gz).')
_OUTPUT = flags.DEFINE_string('output', None, 'CSV to write: line,probability (one line per input row).')
_STRICT = flags.DEFINE_bool('strict', False, 'Stop at the first bad row instead of skipping it.')
_LABEL = flags.DEFINE_enum('label', 'auto', ['auto', 'yes', 'no'],
                           'Whether the input has the label column (auto: from the header or field count).')
_FORMAT = flags.DEFINE_enum('input_format', 'auto', ['auto', 'text', 'csv', 'parquet'],
                            'auto: Parquet by the .parquet suffix, quoted CSV (pyarrow) when the text holds a '
                            'double quote, else the plain reader; or force one.')
_K = flags.DEFINE_integer('k', 10, 'Generative retrieval: items per history.')
_SCENARIO = flags.DEFINE_string('scenario', '', 'Multi-scenario: the scenario of every row, for a file without a '
                                'scenario column (AliExpress: the country of the file).')
_BATCH = flags.DEFINE_integer('batch_size', 4096, 'Rows per model call.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar.')
flags.mark_flags_as_required(['input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint it opens at INFO
  if bool(_WORKDIR.value) == bool(_MODEL.value):
    raise app.UsageError('give --workdir (a training run) or --model (an exported model), one of them')
  from deres_jax.data.bad_input import BadInputError  # pylint: disable=g-import-not-at-top
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from deres_jax.serving import exported, features, predict, predict_families  # pylint: disable=g-import-not-at-top
  has_label = {'auto': None, 'yes': True, 'no': False}[_LABEL.value]
  try:
    if _MODEL.value:
      scorer = exported.load(_MODEL.value, _BATCH.value)
    else:
      from deres_jax.serving import from_workdir  # pylint: disable=g-import-not-at-top
      from deres_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
      try:
        family = from_workdir.read_config(_WORKDIR.value).get('family')
        if family == 'genrec':
          from deres_jax.serving import genrec_export  # pylint: disable=g-import-not-at-top
          scorer = genrec_export.in_process(_WORKDIR.value, (_K.value,))   # a beam of k
        elif family == 'multiscenario':
          from deres_jax.serving import multiscenario_export  # pylint: disable=g-import-not-at-top
          scorer = multiscenario_export.in_process(_WORKDIR.value, _BATCH.value)
        else:
          scorer = from_workdir.from_workdir(_WORKDIR.value, _BATCH.value)
      except checkpoint.CheckpointError as e:
        raise from_workdir.WorkdirError(str(e)) from None
    if hasattr(scorer, 'recommend'):   # generative retrieval: histories -> top-k items
      predict_families.recommend_file(scorer, _INPUT.value, _OUTPUT.value, _K.value, strict=_STRICT.value)
    elif hasattr(scorer, 'scenario_names'):   # multi-scenario rows with a scenario column
      predict_families.score_scenario_file(scorer, _INPUT.value, _OUTPUT.value, scenario=_SCENARIO.value)
    else:
      predict.predict_file(scorer, _INPUT.value, _OUTPUT.value, strict=_STRICT.value, has_label=has_label,
                           progress=_PROGRESS.value, input_format=_FORMAT.value)
  except (features.SchemaError, BadInputError, exported.ModelDirError, FileNotFoundError, ValueError,
          pa.ArrowInvalid) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
