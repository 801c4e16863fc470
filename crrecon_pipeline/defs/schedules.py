"""weekly_retraining: CRRECON_RETRAIN_CRON and CRRECON_RETRAIN_PRESET, each validated by name (settings.py)."""

import dagster as dg

from crrecon_pipeline.defs.assets.training import run_config_for_preset
from crrecon_pipeline.defs.jobs import train_job
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.settings import env_raw
from crrecon_pipeline.train.config import load_config, preset_names

# Weekly by default; CRRECON_RETRAIN_CRON and CRRECON_RETRAIN_PRESET (a configs/ name) change it. Off until a
# user switches it on in the UI (Automation): a 300-epoch run should not start by surprise on a laptop.
RETRAIN_PRESET = env_raw("CRRECON_RETRAIN_PRESET", "default").strip()
RETRAIN_CRON = env_raw("CRRECON_RETRAIN_CRON", "0 3 * * 1").strip()
CRON_REFUSED = f"CRRECON_RETRAIN_CRON={RETRAIN_CRON!r}: not a cron schedule of five fields (e.g. '0 3 * * 1')"
if len(RETRAIN_CRON.split()) != 5:
    raise ConfigError(CRON_REFUSED)
if RETRAIN_PRESET not in preset_names():
    raise ConfigError(f"CRRECON_RETRAIN_PRESET={RETRAIN_PRESET!r}: not a preset ({', '.join(preset_names())})")
RETRAIN_CONFIG = load_config(RETRAIN_PRESET)
# what a run of the preset costs, as docs/benchmarks.md measured it: said where it is started
RETRAIN_COST = ("minutes on a CPU" if RETRAIN_PRESET == "quick"
                else "hours on one GPU (the step requests one: pool gpu, dagster-k8s), far longer on a CPU")

def _weekly_retraining() -> dg.ScheduleDefinition:
    try:  # Dagster checks the fields' values (a minute of 61 is refused here)
        return dg.ScheduleDefinition(
            name="weekly_retraining",
            job=train_job,
            cron_schedule=RETRAIN_CRON,
            run_config=run_config_for_preset(RETRAIN_PRESET),
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description=f"Retrain trained_model (and its analyses) on all prepared shards with the '{RETRAIN_PRESET}' "
                        f"preset ({RETRAIN_CONFIG.training.epochs} epochs of "
                        f"{RETRAIN_CONFIG.model.name}, configs/{RETRAIN_PRESET}.yaml; "
                        f"CRRECON_RETRAIN_PRESET picks another), cron '{RETRAIN_CRON}'. Cost: {RETRAIN_COST}.",
        )
    except dg.DagsterInvalidDefinitionError:
        raise ConfigError(CRON_REFUSED) from None


weekly_retraining = _weekly_retraining()
