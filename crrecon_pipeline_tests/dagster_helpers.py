"""Helpers for the tests that run assets: the data assets of one shard, resources on a temporary home, an
ephemeral instance with the shard partitions, the check results of a run. Kept apart from helpers.py so the plain
tests do not import Dagster."""

import dagster as dg

from crrecon_pipeline.defs.assets.prepared import filtered_bayer, rotated_bayer
from crrecon_pipeline.defs.assets.raw import raw_shard
from crrecon_pipeline.defs.partitions import shards
from crrecon_pipeline.defs.resources import CrreconPaths, FilterSettings, ModelChecks, SimulatorResource, TrainingDevice

DATA_ASSETS = [raw_shard, filtered_bayer, rotated_bayer]


def resources(home, raw_dir="", **filtering):
    return {"paths": CrreconPaths(home=str(home), raw_dir=str(raw_dir)),
            "simulator": SimulatorResource(rows_per_shard=300, initial_shards=2, seed=3),
            "filtering": FilterSettings(**filtering), "device": TrainingDevice(device="cpu"),
            "model_checks": ModelChecks()}


def new_instance(keys=("0", "1")):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(shards.name, list(keys))
    return instance


def check_results(result):
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
