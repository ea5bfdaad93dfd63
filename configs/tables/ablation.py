"""Ablation table: DeRes with one design choice changed per row (research/deres.md §7.6).

  python launch/reproduce.py --table=ablation --data=synthetic --seeds=3

The base is the main table's (configs/tables/main.py: same data, width, depth, AttnRes
blocks and budget). The abstract's ablation claims: the dual path beats either single path;
the Identity skip beats learnable residuals (A9: here ReZero and Highway updates of the
identity stream); SiLU beats softmax. The open choices A4/A5 are shown too: a scalar gate in
place of the vector gate, and the convex merge g*h + (1-g)*a, which (unlike the default
additive merge, whose identity stream keeps every source at weight >= 1 - 0.28 g / N) can
forget a source; it starts near identity with gate_init = +3 (g = 0.95), and halving the
stream with gate_init = 0 is the other row.
"""
import importlib.util
import os

# The main table's module (its rows, base config and budget), loaded by path like any config.
_spec = importlib.util.spec_from_file_location(
    'table_main', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'main.py'))
main = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(main)

NAME = 'ablation'
TITLE = 'DeRes ablations'
BASELINE = 'Identity path only'  # bit for bit the main table's PreNorm Transformer
base_config = main.base_config
budget = main.budget


def deres(**fields):
  """A row: the main table's DeRes with some connector fields changed."""
  return main.connector('deres', **fields)


ROWS = {
    'DeRes (identity + SiLU AttnRes, add, vector gate)': deres(),
    'Identity path only': deres(paths='identity'),
    'AttnRes path only (SiLU)': deres(paths='attnres'),
    # Zero queries make the SiLU path exactly 0 at init: with no identity stream every unit
    # input is 0 and the ReLU head passes no gradient. Random queries (A6) start it off zero.
    'AttnRes path only (SiLU, random queries)': deres(paths='attnres', query_init_scale=1.0),
    'Learnable residual: ReZero identity': deres(identity='rezero'),
    'Learnable residual: Highway identity': deres(identity='highway'),
    'Softmax in place of SiLU': deres(depth_weights='softmax'),
    'Scalar gate in place of vector gate': deres(gate='scalar'),
    'Convex merge, gate_init +3 (near identity)': deres(merge='convex', gate_init=3.0),
    'Convex merge, gate_init 0 (g = 0.5)': deres(merge='convex', gate_init=0.0),
}

_DERES = 'DeRes (identity + SiLU AttnRes, add, vector gate)'
CLAIMS = [
    ('The dual path beats either single path', _DERES,
     ['Identity path only', 'AttnRes path only (SiLU)', 'AttnRes path only (SiLU, random queries)']),
    ('The Identity skip beats learnable residuals', _DERES,
     ['Learnable residual: ReZero identity', 'Learnable residual: Highway identity']),
    ('SiLU beats softmax', _DERES, ['Softmax in place of SiLU']),
    ('The vector gate beats a scalar gate (open choice A5)', _DERES,
     ['Scalar gate in place of vector gate']),
    ('The additive merge beats the convex merge (open choice A4)', _DERES,
     ['Convex merge, gate_init +3 (near identity)', 'Convex merge, gate_init 0 (g = 0.5)']),
    ('The convex merge, started near identity, beats the additive one (the "forgetting" reading)',
     'Convex merge, gate_init +3 (near identity)', [_DERES]),
]
