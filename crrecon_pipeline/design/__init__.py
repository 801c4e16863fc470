"""Inverse design: the surrogate optimizes structures for the Bayer routing efficiency, the simulator verifies them.

May import: everything below it (grid, errors, plots, data/, physics/, train/). Never Dagster or report/.
"""
