"""The `crrecon` command: the same core code as the Dagster assets, for people used to the research code's scripts.

Every subcommand prints human progress on stderr and, where docs/cli.md says so, one JSON line last on stdout.
Bad input (errors.USER_ERRORS: bad data, a bad config or option, a diverged run, a path that cannot be used) ends
with exit code 2 and one line naming the file or key and the problem; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pydantic import Field

from crrecon_pipeline.errors import USER_ERRORS, ConfigError, one_line
from crrecon_pipeline.settings import Settings, add_flags, from_flags
from crrecon_pipeline.train.records import json_safe


def _progress(total: int, desc: str, unit: str = "row"):
    if not sys.stderr.isatty():  # tqdm's disable=None rule, without importing tqdm (0.1 s) for a bar never drawn
        return contextlib.nullcontext(), None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, dynamic_ncols=True,
               disable=None)  # disable=None: quiet when stderr is not a terminal (logs, CI)
    return bar, bar.update


class SimulateRun(Settings):
    """How `crrecon simulate` runs: how many rows in how many shard files, how many at a time (not in the data)."""

    OWNER = "simulate"

    rows: int | None = Field(None, ge=1, le=10**9, description="generated structures (or --structures)")
    shards: int = Field(2, ge=1, le=10**6, description="raw shard files the generated rows are written in")
    chunk: int = Field(1024, ge=1, le=2**20, description="rows simulated at a time (bounds memory)")


class DesignRun(Settings):
    """Where `crrecon design` writes and how many rounds it runs (the design itself: DesignSettings)."""

    OWNER = "design"

    shard_index: int | None = Field(None, ge=0, le=10**9, description="k of the written shard (default: next free "
                                                                      "in OUT)")
    rounds: int | None = Field(None, ge=1, le=1000, description="active-learning rounds: design, verify, add the "
                               "designs as a shard, fine-tune (--finetune-epochs, --finetune-lr) between rounds; "
                               "OUT/round_<k>/ per round")


class ImportRun(Settings):
    """How `crrecon import` writes the run config (the mapping itself: crrecon_pipeline/migrate)."""

    OWNER = "import"

    out_len: int | None = Field(None, ge=1, le=301, description="data.out_len of OUT/config.yaml when the data to "
                                "train on have other bins than their config (default: theirs); the checkpoint keeps "
                                "its own, and a run started from it skips the tensors shaped by the bins")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (`crrecon simulate: error: argument --chunk: ...`), exit 2, like every refusal."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


class Subcommand(OneLineParser):
    """A subcommand whose settings flags are added when it is used (parsed or asked for help): the settings
    classes of simulate and design live beside torch code, which only the subcommand that runs imports."""

    def __init__(self, *args, settings=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._settings = settings

    def _add_settings(self) -> None:
        add, self._settings = self._settings, None
        if add is not None:
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._add_settings()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_settings()
        return super().format_help()


def simulate_flags(s: argparse.ArgumentParser) -> None:
    from crrecon_pipeline.physics.params import SIMULATOR_FIELDS, PhysicsParams
    from crrecon_pipeline.physics.shards import SimulationSettings
    from crrecon_pipeline.physics.structures import StructureParams

    add_flags(s, SimulationSettings, ["seed"])
    add_flags(s, StructureParams, ["unfinished_fraction"])
    add_flags(s, PhysicsParams, SIMULATOR_FIELDS, spell=simulator_flag)


def simulator_flag(name: str) -> str:
    """A PhysicsParams field's flag name: multislice_slices -> --slices, rcwa_orders -> --orders (the rcwa step keeps
    its prefix, --rcwa-step-nm, beside multislice's --step-nm)."""
    return {"rcwa_orders": "orders"}.get(name, name.removeprefix("multislice_"))


def cmd_simulate(args) -> dict:
    from crrecon_pipeline.physics.params import PhysicsParams
    from crrecon_pipeline.physics.shards import SimulationSettings, simulate_structures_file, write_dataset
    from crrecon_pipeline.physics.structures import StructureParams

    if not (args.structures is not None or args.rows is None or 1 <= args.shards <= args.rows):
        raise ConfigError(f"--rows {args.rows} --shards {args.shards}: need 1 <= shards <= rows")
    settings = from_flags(args, SimulationSettings, physics=from_flags(args, PhysicsParams),
                             structures=from_flags(args, StructureParams))
    t0 = time.perf_counter()
    if args.structures is not None:
        from crrecon_pipeline.data.npyio import read_header

        rows = read_header(args.structures).shape[0]
        bar, update = _progress(rows, "simulate")
        with bar:
            files = [simulate_structures_file(args.structures, args.out, settings, chunk=args.chunk, device=args.device,
                                              progress=update)]
    else:
        if args.rows is None:
            raise ConfigError("simulate: give --rows N (generated structures) or --structures S.npy")
        rows = args.rows
        bar, update = _progress(rows, "simulate")
        with bar:
            files = write_dataset(args.out, rows, args.shards, settings, chunk=args.chunk, device=args.device,
                                  progress=update)
    rate = rows / (time.perf_counter() - t0)
    return {"rows": rows, "shards": len(files), "out": str(Path(args.out).resolve()), "fidelity": args.fidelity,
            "rows_per_s": round(rate, 1)}


def preprocess_flags(s: argparse.ArgumentParser) -> None:
    from crrecon_pipeline.data.checks import CheckLimits
    from crrecon_pipeline.data.transforms import PREPARE_FIELDS, PrepareSettings

    add_flags(s, PrepareSettings, PREPARE_FIELDS, spell=lambda name: {"n_bins": "bins"}.get(name, name))
    add_flags(s, CheckLimits)


def cmd_preprocess(args) -> dict:
    from crrecon_pipeline.data.checks import CheckLimits
    from crrecon_pipeline.data.prepare import preprocess
    from crrecon_pipeline.data.rawfiles import discover_shards, open_shard
    from crrecon_pipeline.data.transforms import PrepareSettings

    try:
        settings = from_flags(args, PrepareSettings)
    except ValueError as exc:  # the settings' own range check
        raise ConfigError(f"preprocess: {exc}") from None
    total = sum(open_shard(args.raw, k, settings.n_wavelengths).rows for k in discover_shards(args.raw))
    bar, update = _progress(total, "preprocess")
    with bar:
        result = preprocess(args.raw, args.out, settings, progress=update, limits=from_flags(args, CheckLimits))
    warn_failed_checks(args.out, result["versions"])
    for shard, version in result["superseded"].items():
        print(f"crrecon preprocess: warning: shard {shard}: LATEST keeps {result['versions'][shard]}, from a "
              f"preparation that started after this one; this run's {version} is committed but not in LATEST",
              file=sys.stderr)
    return result


def warn_failed_checks(out: Path, versions: dict[str, str]) -> None:
    """The warning checks that failed (e.g. check_finite_spectra above its limit: the rows were dropped, the
    shard is usable) on stderr, one line each, as Dagster shows them in yellow."""
    from crrecon_pipeline.data.checks import manifest_checks
    from crrecon_pipeline.data.store import PreparedStore

    store = PreparedStore(out)
    for shard, version in versions.items():
        for name, check in manifest_checks(store.open(int(shard), version).manifest).items():
            if not check.passed and not check.blocking:
                print(f"crrecon preprocess: warning: shard {shard}: {name} failed: {check.description}",
                      file=sys.stderr)


def cmd_train(args) -> dict:
    from crrecon_pipeline.data.prepared import read_training_set
    from crrecon_pipeline.train.config import load_config
    from crrecon_pipeline.train.entry import train_from_config

    config = load_config(args.config, args.set)
    if args.init_weights is not None:
        config = config.replaced("training.init_from", str(args.init_weights), "--init-weights")
    versions = None
    if args.training_set is not None:
        from crrecon_pipeline.data.home import default_prepared_dir

        store = None if args.raw is not None else (args.prepared or default_prepared_dir())
        versions = read_training_set(args.training_set, store)
    progress = TrainProgress()
    try:
        metrics = train_from_config(config, out_dir=args.out, raw_dir=args.raw, prepared_dir=args.prepared,
                                    resume=args.resume, device=device_of(args), on_record=progress,
                                    log=progress.log, versions=versions)
    finally:
        progress.close()
    return metrics.model_dump() if os.environ.get("RANK", "0") == "0" else None  # under torchrun, rank 0 reports


class TrainProgress:
    """The trainer's records on stderr: a tqdm bar per epoch (moved by the progress records) and one line per epoch."""

    def __init__(self):
        self.bar = None

    def log(self, msg: str) -> None:
        (self.bar.write if self.bar is not None else lambda m: print(m, file=sys.stderr))(msg)

    def __call__(self, record) -> None:
        from crrecon_pipeline.train.records import EpochRecord, ProgressRecord, duration
        from crrecon_pipeline.train.trainlog import epoch_summary

        if isinstance(record, ProgressRecord):
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=record.batches, desc=f"epoch {record.epoch}/{record.epochs}",
                                unit="batch", file=sys.stderr, leave=False, disable=None)
            self.bar.update(record.batch - self.bar.n)
            # the bar shows the epoch's batches; the postfix the run's share, its ETA and the recent loss, made
            # from the record's numbers (not by cutting up its `progress` text)
            parts = [f"run {record.run_fraction:.0%}".replace("%", " %")]
            if record.eta_s is not None:
                parts.append(f"ETA {duration(record.eta_s)}")
            if record.train_loss is not None:
                parts.append(f"loss {record.train_loss:.4g}")
            self.bar.set_postfix_str(" · ".join(parts))
        elif isinstance(record, EpochRecord):
            self.close()
            self.log(epoch_summary(record))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_analyze(args) -> dict | None:
    from crrecon_pipeline.report.analysis import analyze_log, format_report

    result = analyze_log(args.log)
    if args.json:
        return result.to_json(with_history=True)
    print(format_report(result))
    return None


def cmd_predict(args) -> dict:
    from crrecon_pipeline.train.inference import predict_file

    return predict_file(args.checkpoint, args.structures, args.out, device=device_of(args))


def device_of(args) -> str:
    """--device, else CRRECON_DEVICE (validated by name), else auto."""
    from crrecon_pipeline.settings import env_device

    return args.device if args.device is not None else env_device("CRRECON_DEVICE", "auto")


def cmd_import(args) -> dict:
    from crrecon_pipeline.migrate.importer import import_research

    def log(line: str) -> None:
        prefix = "crrecon import: " if line.startswith("warning: ") else "import: "
        print(prefix + line, file=sys.stderr)

    return import_research(args.config, args.out, checkpoint=args.checkpoint, out_len=args.out_len, log=log)


def design_flags(s: argparse.ArgumentParser) -> None:
    from crrecon_pipeline.design.loop import LOOP_FIELDS, LoopSettings
    from crrecon_pipeline.design.optimize import DESIGN_FIELDS, DesignSettings
    from crrecon_pipeline.physics.bands import BAND_EDGES_NM, BAND_WEIGHTS

    add_flags(s, DesignSettings, DESIGN_FIELDS)
    add_flags(s, LoopSettings, LOOP_FIELDS)
    s.add_argument("--band-edges", default=_numbers(BAND_EDGES_NM), help="B|G|R band boundaries in nm")
    s.add_argument("--band-weights", default=_numbers(BAND_WEIGHTS), help="weights of the B, G, R bands")


def _numbers(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def cmd_design(args) -> dict:
    from crrecon_pipeline.design.loop import LoopSettings, run_rounds
    from crrecon_pipeline.design.optimize import DesignSettings
    from crrecon_pipeline.design.run import run_design
    from crrecon_pipeline.physics.bands import bayer_bands

    bands = bayer_bands(_floats(args.band_edges, "--band-edges"), _floats(args.band_weights, "--band-weights"))
    settings = from_flags(args, DesignSettings, bands=bands)
    if args.rounds is not None:  # the active-learning loop: OUT/round_<k>/ per round
        if args.shard_index is not None:
            raise ConfigError("--shard-index: not with --rounds (each round's shard takes the next free index)")
        bar, update = _progress(args.steps * args.rounds, "design rounds", unit="step")
        with bar:
            return run_rounds(args.checkpoint, args.prepared, args.out, settings, args.rounds,
                              from_flags(args, LoopSettings), device_of(args), update,
                              log=lambda message: print(f"design: {message}", file=sys.stderr)).to_json()
    bar, update = _progress(args.steps, "design", unit="step")
    with bar:
        summary = run_design(args.checkpoint, args.prepared, args.out, settings, args.shard_index, device_of(args),
                             update)
    keep = {"index", "predicted_efficiency", "simulated_efficiency"}
    print(f"design: {summary.verification}", file=sys.stderr)
    return {"designs": [d.model_dump(include=keep) for d in summary.designs],
            "training_best_efficiency": summary.training_best_efficiency, "out": summary.out}


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not all(0 <= v <= 1e6 for v in values):  # NaN fails the comparison too
        raise ConfigError(f"{option}: expected finite numbers in [0, 1e6], got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The subcommands; the settings' flags come from the core settings classes (*_flags, add_flags)."""
    p = OneLineParser(prog="crrecon",
                                description="Color-router surrogate pipeline (data, training, analysis).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Subcommand)

    def command(name: str, func, text: str, *required: str, settings=None) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=text, settings=settings)
        for flag in required:
            s.add_argument(f"--{flag}", required=True, type=Path)
        s.set_defaults(func=func)
        return s

    s = command("simulate", cmd_simulate, "write raw-format shards from the built-in simulator", "out",
                settings=simulate_flags)
    add_flags(s, SimulateRun)
    s.add_argument("--structures", type=Path,
                   help="simulate these structures (.npy, (N,[1,]128,128), {0,1}) into shard 0")
    s.add_argument("--device", default="cpu")

    command("preprocess", cmd_preprocess, "raw shards -> filtered Bayer arrays + rotated set", "raw", "out",
            settings=preprocess_flags)

    s = command("train", cmd_train, "train a surrogate from a YAML config", "config")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--raw", type=Path, help="raw shard folder (preprocessed into OUT/prepared)")
    src.add_argument("--prepared", type=Path, help="folder written by `crrecon preprocess`")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--resume", default=None, help="auto (latest checkpoint in OUT) or a checkpoint path")
    s.add_argument("--training-set", type=Path, default=None,
                   help="JSON {shard: version} pinning exact prepared versions (default: each shard's LATEST)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. training.epochs=4")
    s.add_argument("--init-weights", type=Path, metavar="CKPT",
                   help="start from this checkpoint's weights (same model; fresh optimizer, epoch 1) "
                        "= training.init_from")
    s.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: CRRECON_DEVICE, else auto)")

    s = command("analyze", cmd_analyze,
                "diagnose a run's metrics.jsonl (or an old run's text log) and suggest the next run", "log")
    s.add_argument("--json", action="store_true")

    s = command("predict", cmd_predict, "predict Bayer spectra for structures with a checkpoint",
                "checkpoint", "structures", "out")
    s.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: CRRECON_DEVICE, else auto)")

    s = command("import", cmd_import, "a research config (and checkpoint) -> a run config and a crrecon checkpoint",
                "config", "out")
    s.add_argument("--checkpoint", type=Path, help="a checkpoint of the research trainer to convert (their *_best.pt)")
    add_flags(s, ImportRun)

    s = command("design", cmd_design, "design structures with a trained surrogate; verify them with the simulator",
                "checkpoint", "prepared", "out", settings=design_flags)
    add_flags(s, DesignRun)
    s.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: CRRECON_DEVICE, else auto)")
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every `finally` and atomic write cleans up as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        result = args.func(args)
    except USER_ERRORS as exc:
        print(f"crrecon {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"crrecon {args.command}: terminated (SIGTERM); temporary files removed", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"crrecon {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"crrecon {args.command}: error: out of memory (MemoryError); give the process more memory or "
              "work in smaller pieces", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "can't start new thread" not in str(exc):
            raise
        print(f"crrecon {args.command}: error: cannot start a thread ({exc}); raise the process's limits "
              "(ulimit -u / -v)", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(json_safe(result), allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
