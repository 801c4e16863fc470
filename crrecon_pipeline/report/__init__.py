"""What people read about data and runs: log analysis and suggestions, the dataset profile, the model card, the
metadata a run shows in Dagster, and markdown tables. Plain Python: returns text and numbers, never Dagster objects.

May import: grid, errors, numbers, plots, data/, physics/, models/, losses/, train/. Never Dagster or design/.
"""
