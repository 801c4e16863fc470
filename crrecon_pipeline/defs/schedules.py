import os

import dagster as dg

from .assets.training import run_config_for_preset
from .jobs import train_job

# Weekly by default; CRRECON_RETRAIN_CRON and CRRECON_RETRAIN_PRESET (a configs/ name) change it. Off until a
# user switches it on in the UI (Automation): a 300-epoch run should not start by surprise on a laptop.
weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining",
    job=train_job,
    cron_schedule=os.environ.get("CRRECON_RETRAIN_CRON", "0 3 * * 1"),
    run_config=run_config_for_preset(os.environ.get("CRRECON_RETRAIN_PRESET", "default")),
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Retrain trained_model (and its analyses) on all prepared shards with the preset's run config.",
)
