"""Compute–AUC scaling studies (docs/scaling.md, research/deres.md §6).

`runs`: the compute sweep (every model × depth × width × seed a normal training run);
`fit`: power-law and log-linear fits with bootstrap intervals, compute matching (numpy only);
`plot`: AUC against FLOPs on log axes (matplotlib, the optional 'plot' extra);
`report`: the markdown tables of results/scaling_*.md.
"""
