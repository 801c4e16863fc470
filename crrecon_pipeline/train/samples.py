"""Live sample views: a fixed set of validation and training structures, drawn as true vs predicted spectra
while the run trains (the research group's dashboard view), for the live observation and TensorBoard.

The set is the first `n` validation rows and the first `n` training originals of the split: the split is a pure
function of the data (split.py), so a resumed run draws the same structures. Drawn at the loss-curve figure's pace
(report/run_metadata.py LiveCurves: every 5 epochs or 120 s, and after the first epoch), never more often than
keeps drawing under 1 % of the wall time: the two 8-row figures cost seconds (docs/benchmarks.md); the final
predictions figures (loop._finalize) draw the same structures with the best weights. The epoch record then
names the two PNGs (`sample_figures`).

The dashboard (plots.Dashboard: the loss, the lr, each term's share and the spectra of the first `N_DASHBOARD`
structures of each set) is drawn after every epoch into outputs/dashboard.png, titled with its epoch, and named in
every epoch record (`sample_figures["dashboard"]`): the newest observation always carries the current one. It
costs ~0.2-0.4 s a draw (benchmarks/bench_dashboard.py)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

N_SAMPLES = 8
N_DASHBOARD = 2
DASHBOARD = "dashboard"


class SampleViews:
    def __init__(self, run, predict, n: int = N_SAMPLES, every_epochs: int = 5, every_s: float = 120.0,
                 max_share: float = 0.01):
        self.predict = predict  # loop.predict_batches (passed in: this module stays below the loop)
        self.run, self.every_epochs, self.every_s, self.max_share = run, every_epochs, every_s, max_share
        self.sets = {"val": run.val_idx[:n], "train": run.train_idx[:n]}
        self.last_epoch, self.last_t, self.cost = None, time.perf_counter(), 0.0
        self.dashboard = None  # made at its first draw (matplotlib loaded only by a run that draws)

    def _due(self, epoch: int) -> bool:
        if self.last_epoch is None:  # the first epoch of this session: something to look at early
            return True
        since = time.perf_counter() - self.last_t
        due = epoch - self.last_epoch >= self.every_epochs or since >= self.every_s
        return due and since >= self.cost / self.max_share

    def paths(self) -> dict[str, Path]:
        return {split: self.run.output_dir / f"samples_{split}.png" for split in self.sets}

    def update(self, epoch: int) -> dict[str, str]:
        """{"dashboard": png} after every epoch, with {"val": png, "train": png} when the sample views are due."""
        out = {DASHBOARD: str(self.draw_dashboard())}
        if not self._due(epoch):
            return out
        return out | self._draw_views(epoch)

    def draw_dashboard(self) -> Path:
        """The dashboard of the run so far (the history ends with the epoch just validated)."""
        from crrecon_pipeline.plots import Dashboard

        run = self.run
        sets = {split: idx[:N_DASHBOARD] for split, idx in self.sets.items()}
        idx = torch.cat([sets["val"], sets["train"]])
        if self.dashboard is None:
            labels = [f"{split} #{k + 1}" for split, part in sets.items() for k in range(len(part))]
            self.dashboard = Dashboard(run.prepared.wavelengths_nm, labels)
        pred = self.predict(run.model, run.data, idx, run.batch_size, run.pm1, run.autocast)
        run.model.train()
        return self.dashboard.draw(run.history, run.data.target(idx).cpu().numpy(), pred.cpu().numpy(),
                                   run.output_dir / f"{DASHBOARD}.png", run.epochs)

    def _draw_views(self, epoch: int) -> dict[str, str]:
        t = time.perf_counter()
        out = {split: str(path) for split, path in self.paths().items()}
        for split, idx in self.sets.items():
            self.draw(idx, out[split], f"{split} samples, epoch {epoch}/{self.run.epochs}: true vs predicted")
        self.last_epoch, self.last_t = epoch, time.perf_counter()
        self.cost = self.last_t - t
        return out

    def draw(self, idx: torch.Tensor, path: str | Path, title: str) -> None:
        from crrecon_pipeline.plots import plot_predictions
        run = self.run
        pred = self.predict(run.model, run.data, idx, run.batch_size, run.pm1, run.autocast)
        run.model.train()
        plot_predictions(run.data.inputs(idx, False)[:, 0].cpu().numpy(), run.data.target(idx).cpu().numpy(),
                         pred.cpu().numpy(), run.prepared.wavelengths_nm, path, title=title)
