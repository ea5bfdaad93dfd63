"""FLOPs per example: analytic counts (per module) and XLA's count, to check one by the other.

Every model has a `flops_per_example()` method returning a dict of analytic forward FLOPs
per example by part (2 FLOPs per multiply-add; matmuls, contractions and pairwise
interactions; elementwise work such as activations and norms is left out unless it is the
model's main cost, as in logistic regression), with the sum under 'total'. A test
(tests/test_model_zoo.py) checks 'total' against `xla_flops_per_example`, which compiles
the forward pass and reads XLA's own cost analysis.

Training FLOPs are taken as 3x forward (forward + backward), the usual convention of the
scaling-law papers (research/deres.md §6).
"""
import jax

TRAIN_MULTIPLIER = 3  # forward + backward ~ 3 x forward


def dense(d_in: int, d_out: int, tokens: int = 1) -> int:
  """FLOPs of a dense layer [d_in] -> [d_out] applied to `tokens` vectors (bias ignored)."""
  return 2 * d_in * d_out * tokens


def total(parts: dict) -> dict:
  """Adds 'total' to a dict of per-part FLOPs."""
  out = {k: int(v) for k, v in parts.items()}
  out['total'] = int(sum(out.values()))
  return out


def xla_flops_per_example(model, variables, batch) -> float:
  """XLA's count of the forward pass (logits only) per example, for a batch of B rows."""
  fn = jax.jit(lambda v, b: model.apply(v, b)[0])
  cost = fn.lower(variables, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  n = jax.tree.leaves(batch)[0].shape[0]
  return float(cost['flops']) / n
