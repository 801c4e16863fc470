"""Training the surrogate: the run config schema, the split, device-side batches, the schedule, the loop,
checkpoints, structured records, torchrun ranks, inference and pretraining on simulator rows.

May import: grid, errors, numbers, plots, data/, physics/, models/, losses/. Never Dagster, report/ or design/.
"""
