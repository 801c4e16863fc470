import os

import dagster as dg

from crrecon_pipeline.defs.assets.training import run_config_for_preset
from crrecon_pipeline.defs.jobs import train_job
from crrecon_pipeline.train.config import load_config

# Weekly by default; CRRECON_RETRAIN_CRON and CRRECON_RETRAIN_PRESET (a configs/ name) change it. Off until a
# user switches it on in the UI (Automation): a 300-epoch run should not start by surprise on a laptop.
RETRAIN_PRESET = os.environ.get("CRRECON_RETRAIN_PRESET", "default")
RETRAIN_CRON = os.environ.get("CRRECON_RETRAIN_CRON", "0 3 * * 1")

weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining",
    job=train_job,
    cron_schedule=RETRAIN_CRON,
    run_config=run_config_for_preset(RETRAIN_PRESET),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=f"Retrain trained_model (and its analyses) on all prepared shards with the '{RETRAIN_PRESET}' preset "
                f"({load_config(RETRAIN_PRESET).training.epochs} epochs, configs/{RETRAIN_PRESET}.yaml; "
                f"CRRECON_RETRAIN_PRESET picks another), cron '{RETRAIN_CRON}'.",
)
