"""Steering a training run from the Dagster UI: launch `steer_training_job` with the training run's id and the
change (loss weights, grad_clip, ... as `crrecon control` takes them) or a stop after the current epoch. The op
hands the request to the live trainer through its run folder (train/control.py) and succeeds once the trainer has
taken it; what the trainer would refuse fails the step in one line. The change is on the training run's record
with its epoch (a ControlRecord), as from the terminal."""

import dagster as dg
from pydantic import Field

from crrecon_pipeline.defs.assets.common import bad_input_fails_step
from crrecon_pipeline.defs.resources import CrreconPaths
from crrecon_pipeline.train.control import send


class SteerConfig(dg.Config):
    run_id: str = Field(description="the training run to steer (its Dagster run id, as on the Runs page)")
    set: list[str] = Field(default_factory=list, description="changes from the next epoch, dotted KEY=VALUE as "
                           "`crrecon control --set` takes them, e.g. loss.params.w_corr=0.1, training.grad_clip=0.5")
    stop_after_epoch: bool = Field(False, description="end the run cleanly after the epoch it is in (resumable)")
    timeout_s: float = Field(120.0, gt=0, le=3600, description="how long to wait for the trainer to take it")


@dg.op(description="Hand a change or a stop request to a live training run; succeeds once the trainer took it.")
def steer_training(context: dg.OpExecutionContext, config: SteerConfig, paths: CrreconPaths) -> dict:
    if not config.set and not config.stop_after_epoch:
        raise dg.Failure(description="give `set` (e.g. loss.params.w_corr=0.1) and/or stop_after_epoch: true",
                         allow_retries=False)
    run = context.instance.get_run_by_id(config.run_id)
    folder = (run.root_run_id or run.run_id) if run is not None else config.run_id  # a re-execution's is its root's
    with bad_input_fails_step():
        result = send(paths.runs_path() / folder, config.set, config.stop_after_epoch, config.timeout_s)
    then = f"; it stops after epoch {result['read_in_epoch']}" if config.stop_after_epoch else ""
    context.log.info(f"run {config.run_id}: the trainer took the request in epoch {result['read_in_epoch']}: "
                     f"{', '.join(result['changed']) or 'no change'} from epoch {result['applies_from_epoch']}{then}")
    return result


@dg.job(description="Steer a running training: loss weights, grad_clip, early stopping from the next epoch, or a "
                    "clean stop after the current epoch (run config: run_id, set, stop_after_epoch).",
        tags={"crrecon/kind": "control"})
def steer_training_job():
    steer_training()
