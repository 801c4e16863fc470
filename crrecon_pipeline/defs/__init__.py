"""The Dagster layer: thin wrappers that call the plain modules of crrecon_pipeline."""

import warnings

import dagster as dg

# Partitioned asset checks (one result per shard) are a preview feature of Dagster 1.13; we rely on it knowingly.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")
