"""Moving the research group's work (hyoseokp/data_CR, code/CR_recon) into this project without losing it: their run
config YAML becomes a validated run config (every key mapped, or dropped with its reason, in one report; their
trainer's defaults written out) and their trainer's checkpoints become checkpoints of this project that
`crrecon predict`, `crrecon design`, `--init-weights` and `training.init_from` accept (their epoch and loss history
kept as provenance). `crrecon import` runs it. No research code is needed or used: the mapping is written from
the facts of their config keys, trainer and checkpoint layout.

May import: the bottom modules, `data`, `models`, `losses`, `train`. Never `report`, `design`, `defs` or Dagster.
"""
