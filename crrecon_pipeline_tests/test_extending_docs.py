"""docs/extending.md's example model and loss, taken from the page as written (its python code blocks), registered
and trained for one tiny epoch on simulator data through the real trainer: the page cannot drift from what the
trainer needs (a TermLoss with its terms, PARAM_GROUPS for training.freeze, an OutputScale at the end)."""

import json
import math
import re
from pathlib import Path

from torch import nn

from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.losses import LOSSES
from crrecon_pipeline.losses.terms import TermLoss
from crrecon_pipeline.models import MODELS
from crrecon_pipeline.train.checkpoints import load as load_checkpoint
from crrecon_pipeline.train.freeze import apply_freeze
from crrecon_pipeline.train.loop import train

from .helpers import tiny_config

PAGE = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def example_class(section: str, base: type) -> type:
    """The one class deriving from `base` that the section's python code block defines, the block run as written."""
    text = PAGE.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    assert len(blocks) == 1, f"{section}: expected one python example, found {len(blocks)}"
    namespace = {"__name__": f"extending_docs_{section.split()[-1]}"}
    exec(compile(blocks[0], f"{PAGE}:{section}", "exec"), namespace)
    defined = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, base) and v is not base
               and v.__module__ == namespace["__name__"]]
    assert len(defined) == 1, f"{section}: expected one {base.__name__} subclass, found {defined}"
    return defined[0]


def test_the_pages_example_model_and_loss_train_through_the_real_trainer(prepared_dir, tmp_path, monkeypatch):
    model_cls, loss_cls = example_class("Add a model", nn.Module), example_class("Add a loss", TermLoss)
    monkeypatch.setitem(MODELS._entries, "docs_model", model_cls)  # registered in this process only
    monkeypatch.setitem(LOSSES._entries, "docs_loss", loss_cls)
    cfg = tiny_config("training.epochs=1", "training.save_every=0").with_overrides(
        {"model.name": "docs_model", "model.params": {"channels": [8, 16]}, "training.freeze": ["encoder"],
         "loss.name": "docs_loss", "loss.params": {"w_l1": 0.2}}, "docs example")
    result = train(cfg, load_prepared(prepared_dir), tmp_path, device="cpu", log=lambda m: None)
    assert result.epochs_completed == 1 and math.isfinite(result.val_mse) and result.val_mse > 0

    epoch = next(r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
                 if r["kind"] == "epoch")
    assert set(epoch["val_terms"]) == {"mse", "l1"}  # the loss's weighted terms reach the records ...
    assert math.isclose(sum(epoch["val_terms"].values()), epoch["val_loss"], rel_tol=1e-4)  # ... and sum to it

    groups = apply_freeze(model_cls(channels=(8, 16)), ["encoder"])  # PARAM_GROUPS: the encoder is the backbone
    backbone = sum(p.numel() for p in model_cls(channels=(8, 16)).backbone.parameters())
    assert groups["frozen_params"] == backbone and groups["trainable_params"] > 0
    assert set(load_checkpoint(tmp_path / "last.pt")["model"]) == set(model_cls(channels=(8, 16)).state_dict())
