"""One torchrun rank started through Dagster Pipes by trained_model or pretrained_model (defs/launch.py;
`python -m crrecon_pipeline.defs.pipes_worker`).

Every rank trains; rank 0 alone opens the Pipes session and sends the trainer's records (progress, epoch, final)
as custom messages, which the asset turns into the same log lines and observations as a single-process run; from
the final record's metrics the asset builds the same final metadata (report.run_metadata.final_metadata). A bad
input ends with one line, sent to the asset as an {"kind": "error"} record, and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from crrecon_pipeline.data.prepared import read_training_set
from crrecon_pipeline.errors import USER_ERRORS, one_line
from crrecon_pipeline.train.config import load_config
from crrecon_pipeline.train.entry import train_from_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="crrecon_pipeline.defs.pipes_worker")
    p.add_argument("--config", required=True)
    p.add_argument("--prepared", required=True)
    p.add_argument("--training-set", default=None, help="JSON {shard: version}: the lineage's exact versions")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run(on_record, log):
        config = load_config(args.config)  # the YAML trained_model wrote, validated into the RunConfig again
        versions = read_training_set(args.training_set) if args.training_set else None
        train_from_config(config, args.out, prepared_dir=args.prepared, resume="auto", device=args.device,
                          on_record=on_record, log=log, versions=versions)

    if os.environ.get("RANK", "0") != "0":
        try:
            run(None, lambda msg: None)
        except USER_ERRORS as exc:
            print(f"rank {os.environ.get('RANK')}: {one_line(exc)}", file=sys.stderr)
            return 2
        return 0

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        try:
            run(lambda record: pipes.report_custom_message(record.to_json()), pipes.log.info)
        except USER_ERRORS as exc:
            pipes.report_custom_message({"kind": "error", "message": one_line(exc)})
            return 2
        # the final record (on_record above) carries the metrics; the asset builds the metadata from them
    return 0


if __name__ == "__main__":
    sys.exit(main())
