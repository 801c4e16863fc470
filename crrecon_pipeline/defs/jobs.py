import dagster as dg

# raw -> filtered -> rotated for one shard (partitioned by shard, with the checks); the sensor launches one run
# per new shard.
prepare_data_job = dg.define_asset_job(
    "prepare_data_job",
    selection=dg.AssetSelection.assets("raw_structures", "raw_spectra", "filtered_bayer", "rotated_bayer"),
    description="Simulate or read one raw shard, filter it to Bayer arrays and build its rotated set.",
)

# training on every prepared shard, then the analyses of the run and of the dataset.
train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.assets("trained_model", "training_log_analysis", "run_comparison", "dataset_profile"),
    description="Train the surrogate (GPU pool) and analyse the run against earlier runs.",
)

# pretraining on simulator rows in the user's geometry, for trained_model to fine-tune (init_from: pretrained_model).
pretrain_job = dg.define_asset_job(
    "pretrain_job",
    selection=dg.AssetSelection.assets("pretrained_model"),
    description="Pretrain the surrogate on built-in simulator rows (GPU pool) for fine-tuning on a small set.",
)

# inverse design with the latest trained surrogate, verified by the simulator (run config: designs, steps, ...).
design_job = dg.define_asset_job(
    "design_job",
    selection=dg.AssetSelection.assets("designed_structures"),
    description="Design color routers through the latest trained surrogate and verify them with the simulator.",
)

# one round of the active-learning design loop (run config: rounds, the design run, the fine-tuning schedule); the
# design_loop_sensor runs the rest unattended: prepare the new shard, fine-tune, the next round, until `rounds`.
design_loop_job = dg.define_asset_job(
    "design_loop_job",
    selection=dg.AssetSelection.assets("design_round"),
    description="Start (or continue) the active-learning design loop: design, verify, add the designs as a new "
                "shard; design_loop_sensor then prepares it, fine-tunes and runs the next round.",
)

# the loop's fine-tuning between rounds: trained_model from the current checkpoint on old + new shards.
design_finetune_job = dg.define_asset_job(
    "design_finetune_job",
    selection=dg.AssetSelection.assets("trained_model"),
    description="Fine-tune the surrogate between design rounds (run config from design_loop_sensor).",
)
