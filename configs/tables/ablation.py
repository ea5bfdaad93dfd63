"""Ablation table: DeRes with one design choice changed per row (research/deres.md §7.6).

  python launch/reproduce.py --table=ablation --data=synthetic --seeds=3

The base is the main table's (configs/tables/main.py: same data, width, depth, AttnRes
blocks and budget). The abstract's ablation claims: the dual path beats either single path;
the Identity skip beats learnable residuals (A9: here ReZero and Highway updates of the
identity stream); SiLU beats softmax. The full-text write-up (research/deres.md §9) adds: a
gated fusion of the two paths (the default merge, u = g*h + (1-g)*a) beats an additive one
(u = h + a), and the identity path beats learnable residual *matrices* (HC/mHC-style maps:
here identity='matrix', h M + f with M = I at init, and the mHC connector itself), beside the
scalar/vector learnable residuals (ReZero, Highway). A scalar gate in place of the vector gate,
the abstract-era merge u = h + g*a, and the gated merge started near identity (gate_init = +3,
g = 0.95) are the open choices A4/A5.
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
PRESETS = main.PRESETS
budget = main.budget


def deres(**fields):
  """A row: the main table's DeRes with some connector fields changed."""
  return main.connector('deres', **fields)


ROWS = {
    'DeRes (identity + SiLU AttnRes, gated, vector gate)': deres(),
    'Identity path only': deres(paths='identity'),
    'AttnRes path only (SiLU)': deres(paths='attnres'),
    # Zero queries make the SiLU path exactly 0 at init: with no identity stream every unit
    # input is 0 and the ReLU head passes no gradient. Random queries (A6) start it off zero.
    'AttnRes path only (SiLU, random queries)': deres(paths='attnres', query_init_scale=1.0),
    'Learnable residual: ReZero identity': deres(identity='rezero'),
    'Learnable residual: Highway identity': deres(identity='highway'),
    'Learnable residual matrices: h M + f identity': deres(identity='matrix'),
    'Learnable residual matrices: mHC connector': main.connector('mhc'),
    'Softmax in place of SiLU': deres(depth_weights='softmax'),
    'Scalar gate in place of vector gate': deres(gate='scalar'),
    'Additive merge (h + a)': deres(merge='additive'),
    'Scaled additive merge (h + g*a, abstract-era)': deres(merge='add'),
    'Gated merge, gate_init +3 (near identity)': deres(gate_init=3.0),
}

_DERES = 'DeRes (identity + SiLU AttnRes, gated, vector gate)'
CLAIMS = [
    ('The dual path beats either single path', _DERES,
     ['Identity path only', 'AttnRes path only (SiLU)', 'AttnRes path only (SiLU, random queries)']),
    ('The Identity skip beats learnable residuals', _DERES,
     ['Learnable residual: ReZero identity', 'Learnable residual: Highway identity']),
    ('The Identity skip beats learnable residual matrices', _DERES,
     ['Learnable residual matrices: h M + f identity', 'Learnable residual matrices: mHC connector']),
    ('SiLU beats softmax', _DERES, ['Softmax in place of SiLU']),
    ('The vector gate beats a scalar gate (open choice A5)', _DERES,
     ['Scalar gate in place of vector gate']),
    ('The gated fusion beats the additive one', _DERES,
     ['Additive merge (h + a)', 'Scaled additive merge (h + g*a, abstract-era)']),
    ('The gate started at g = 0.5 beats one started near identity (open choice A5)', _DERES,
     ['Gated merge, gate_init +3 (near identity)']),
]
