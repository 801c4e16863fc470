"""The research group's four architectures (models.research): constructor defaults, state-dict names and shapes
equal the facts recorded from their code (fixtures/research_params.json, no research code needed here), a state
dict in their trainer's checkpoint format loads with strict=True and predicts, and the output stage keeps their
state dict and applies their trainer's projection."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import pytest
import torch

from crrecon_pipeline.models.research import RESEARCH_MODELS
from crrecon_pipeline.models.research.parts import research_projection, trainer_constraint
from crrecon_pipeline.train.freeze import group_of

FACTS = json.loads((Path(__file__).parent / "fixtures" / "research_params.json").read_text())


def layout(model: torch.nn.Module) -> list[list]:
    params = dict(model.named_parameters())
    return [[k, list(v.shape), "parameter" if k in params else "buffer"] for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", sorted(FACTS["models"]))
def test_defaults_names_and_shapes_are_the_research_codes(name):
    facts = FACTS["models"][name]
    cls = RESEARCH_MODELS[name]
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    assert defaults == facts["defaults"]
    model = cls()
    assert layout(model) == facts["state_dict"]  # names, shapes, kinds and their order
    assert sum(p.numel() for p in model.parameters()) == facts["n_parameters"]


@pytest.mark.parametrize("config", sorted(FACTS["configs"]))
def test_every_research_config_builds_the_research_layout(config):
    facts = FACTS["configs"][config]
    assert layout(RESEARCH_MODELS[facts["model"]](**facts["params"])) == facts["state_dict"]


def research_checkpoint(name: str, **params) -> dict:
    """A checkpoint as their trainer writes it, with random tensors of the recorded shapes (no research code)."""
    gen = torch.Generator().manual_seed(0)
    reference = RESEARCH_MODELS[name](**params).state_dict()  # the buffers' values (wavelength grids)
    state = {k: reference[k].clone() if kind == "buffer" else 0.05 * torch.randn(shape, generator=gen)
             for k, shape, kind in FACTS["models"][name]["state_dict"]}
    return {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 41, "val_loss": 0.01,
            "best_val_loss": 0.009, "train_losses": [0.02, 0.01], "val_losses": [0.012, 0.01]}


@pytest.mark.parametrize("name", sorted(FACTS["models"]))
def test_a_research_checkpoint_loads_strictly_and_predicts(name):
    buffer = io.BytesIO()
    torch.save(research_checkpoint(name), buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model = RESEARCH_MODELS[name]().eval()
    model.load_state_dict(ckpt["model"], strict=True)
    x = (torch.rand(2, 1, 128, 128) > 0.5).float() * 2 - 1
    with torch.no_grad():
        y = model(x)
    out_len = FACTS["models"][name]["defaults"]["out_len"]
    assert y.shape == (2, 2, 2, out_len) and torch.isfinite(y).all()
    assert ((y >= 0) & (y <= 1)).all()  # a sigmoid output, no constraint set
    assert model.state_dict().keys() == ckpt["model"].keys()


@pytest.mark.parametrize("name", sorted(FACTS["models"]))
def test_the_output_stage_holds_no_tensors_ignores_stats_and_projects(name):
    model = RESEARCH_MODELS[name](out_len=30).eval()
    assert model.scale.state_dict() == {}
    x = (torch.rand(2, 1, 128, 128) > 0.5).float() * 2 - 1
    with torch.no_grad():
        before = model(x)
        model.scale.set_stats(torch.full((2, 2, 30), 5.0), torch.tensor(3.0))  # the trainer calls it: no effect
        assert torch.equal(model(x), before)
        model.scale.set_constraint(0.45, 0.95)
        projected = model(x)
    assert projected.shape == (2, 2, 2, 30)
    assert torch.equal(projected, research_projection(before, 0.45, 0.95))
    total = projected[:, 0, 0] + 0.5 * (projected[:, 0, 1] + projected[:, 1, 0]) + projected[:, 1, 1]
    assert total.min() >= 0.45 - 1e-6 and total.max() <= 0.95 + 1e-6


@pytest.mark.parametrize("name", sorted(FACTS["models"]))
def test_every_parameter_is_in_one_group(name):
    model = RESEARCH_MODELS[name]()
    groups = {n: group_of(model, n) for n, _ in model.named_parameters()}
    assert None not in groups.values(), [n for n, g in groups.items() if g is None]
    assert set(groups.values()) == {"encoder", "decoder", "head"}


def test_projection_by_hand():
    pred = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.5, 0.4, 0.2, 0.6]).view(1, 2, 2, 2)  # [[R, G1], [G2, B]] x 2 bins
    # bin 0: R .1, G1 .3, G2 .5, B .2 -> s = .1 + .4 + .2 = .7 (inside); bin 1: .2, .1, .4, .6 -> s = 1.05 > .95
    out = research_projection(pred, 0.45, 0.95)
    assert torch.allclose(out[..., 0], pred[..., 0])
    assert torch.allclose(out[..., 1], pred[..., 1] + (0.95 - 1.05) / 3, atol=1e-7)
    # the physical intensities are -pred: the same as bounds [-0.95, -0.45] on pred
    neg = research_projection(-pred, 0.45, 0.95, physical_is_negative=True)
    assert torch.allclose(neg, -out, atol=1e-7)
    assert torch.allclose(research_projection(pred, -0.95, -0.45), pred + (-0.45 - torch.tensor([0.7, 1.05])) / 3)
    flat = torch.rand(3, 4, 5)
    assert research_projection(flat) is flat  # another shape passes unchanged, as in their trainer
    half = research_projection(pred.half(), 0.45, 0.95)
    assert half.dtype == torch.float16  # computed in float32, cast back


def test_trainer_constraint_defaults_apply_without_a_constraints_block():
    assert trainer_constraint({}) == (0.45, 0.95, False)
    assert trainer_constraint({"constraints": None}) == (0.45, 0.95, False)
    assert trainer_constraint({"constraints": {"sum_max": 3.0}}) == (0.45, 3.0, False)
    assert trainer_constraint({"constraints": {"sum_min": 0.0, "sum_max": 3.0, "physical_is_negative": True}}) == (
        0.0, 3.0, True)


def test_pooled_research_models_cannot_tell_a_block_over_r_from_one_over_b():
    """A finding to tell the research group: se_disco and cnn_gru average their map to one vector (se_disco's
    |FFT| branch and circular FNO are shift-invariant too), so at any weights a block moved by half a period, from
    above R to above B, gives the same output; cnn_xattn and cnn_diffraction keep positions (16 tokens)."""
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 128, 128) - 1
    x[0, :, 10:40, 10:40] = 1
    x[1, :, 74:104, 74:104] = 1
    small = {"se_disco": dict(width=16, fno_blocks=2, z_dim=32, siren_hidden=32, siren_layers=2),
             "cnn_gru": dict(d_model=32), "cnn_xattn": dict(d_model=32, nhead=4, dec_layers=1),
             "cnn_diffraction": dict(d_model=32, nhead=4, dec_layers=1)}
    diff = {}
    for name, params in small.items():
        with torch.no_grad():
            y = RESEARCH_MODELS[name](out_len=30, **params).eval()(x)
        diff[name] = (y[0] - y[1]).abs().max().item()
    assert diff["se_disco"] < 1e-6 and diff["cnn_gru"] < 1e-6, diff
    assert diff["cnn_xattn"] > 1e-5 and diff["cnn_diffraction"] > 1e-5, diff


def test_se_disco_symmetry_averaging_swaps_pixels_in_eval_only():
    model = RESEARCH_MODELS["se_disco"](out_len=30, width=16, fno_blocks=1, z_dim=32, siren_hidden=32,
                                        siren_layers=2, use_tta_symmetry=True, enc_dropout=0.0, head_dropout=0.0)
    x = (torch.rand(1, 1, 128, 128) > 0.5).float() * 2 - 1
    with torch.no_grad():
        y = model.eval()(x)
        plain = model._forward_single(x)
        turned = model._forward_single(torch.rot90(x, 2, [-2, -1]))
        assert torch.allclose(y[:, 0, 0], 0.5 * (plain[:, 0, 0] + turned[:, 1, 1]))
        assert torch.allclose(y[:, 0, 1], 0.5 * (plain[:, 0, 1] + turned[:, 1, 0]))
        assert torch.equal(model.train()(x), plain)  # no dropout here: training mode skips the averaging
