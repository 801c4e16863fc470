"""The one config schema: presets shipped in the package, bad configs refused in one line naming the dotted key
(CLI exit 2, launchpad step failure), and the launchpad mirroring the schema with the quick preset's values."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from crrecon_pipeline import cli
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.train.config import RunConfig, load_config, preset_names, preset_text, validate

REPO = Path(__file__).resolve().parent.parent


def test_user_facing_configs_link_to_the_packaged_presets():
    """configs/ holds no second copy: every entry is a symbolic link to its preset in the package (one source)."""
    user = sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
    assert user == preset_names() and "quick" in user
    for name in user:
        path = REPO / "configs" / f"{name}.yaml"
        assert path.is_symlink() and path.resolve() == (REPO / "crrecon_pipeline" / "presets" / f"{name}.yaml"), name
        assert path.read_text() == preset_text(name), name
        assert load_config(name) == load_config(path)


def test_defaults_live_in_the_schema_and_fill_missing_keys(tmp_path):
    partial = tmp_path / "p.yaml"
    partial.write_text("training: {epochs: 3}\n")
    cfg = load_config(partial)
    assert cfg.training.epochs == 3 and cfg.training.lr == RunConfig().training.lr
    assert cfg == RunConfig(training={"epochs": 3})


BAD = [  # (--set ..., the key the one-line error must name)
    (["training.epoch=1"], "training.epoch: unknown key"),
    (["trainng.epochs=4"], "trainng: unknown key"),
    (["training=5"], "training: must be a section"),
    (["data=null"], "data: must be a section"),
    (["x={"], "--set x: invalid YAML"),
    (["training.epochs=[1]"], "training.epochs"),
    (["training.epochs=null"], "training.epochs"),
    (["training.epochs=0"], "training.epochs"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.train_ratio=1"], "data.train_ratio"),
    (["training.lr=.inf"], "training.lr: must be a finite number"),
    (["training.lr=0"], "training.lr"),
    (["model.name=nope"], "model.name: unknown model"),
    (["model.params.depth=3"], "model.params.depth: not a parameter of model cnn_field"),
    (["loss.params.w_smooth=1"], "loss.params.w_smooth: not a parameter of loss crrecon_mse_pearson"),
    (["model.params.out_len=20"], "model.params.out_len"),
    (["output.log_file=/tmp/evil.txt"], "output.log_file: must be a relative path"),
    (["output.log_file=../evil.txt"], "output.log_file: must stay inside the run folder"),
    (["output.dir=a/../../b"], "output.dir: must stay inside the run folder"),
    (["training.epochs"], "--set expects key=value"),
]


@pytest.mark.parametrize("sets,expected", BAD, ids=[b[0][0] for b in BAD])
def test_bad_config_is_one_line_exit_2(sets, expected, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--config", "quick", "--out", str(out), "--device", "cpu"] + sum((["--set", s] for s in sets), [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists(), "nothing is written for a refused config"


def test_bad_yaml_files_are_one_line(tmp_path, capsys):
    cases = {"typo.yaml": ("training: {epoch: 1}\n", "training.epoch: unknown key"),
             "list.yaml": ("- 1\n- 2\n", "a config must be a mapping"),
             "broken.yaml": ("training: {epochs: [\n", "invalid YAML"),
             "section.yaml": ("model: 5\n", "model: must be a section")}
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert cli.main(["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err and expected in err, err
    assert cli.main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_constructor_binding_accepts_every_preset_and_checks_names():
    for name in preset_names():
        validate(load_config(name), name)
    with pytest.raises(ConfigError, match="model.params.fields: not a parameter of model crrecon_gru"):
        load_config("quick", ["model.name=crrecon_gru"])  # quick's params are cnn_field's


def test_launchpad_mirrors_the_schema_with_the_quick_preset():
    from crrecon_pipeline.defs.assets.training import TrainedModelConfig, trained_model

    quick = load_config("quick")
    shape = trained_model.op.config_schema.as_field().config_type
    assert set(shape.fields) == set(RunConfig.model_fields) | {"preset"}
    assert shape.fields["preset"].default_value == "quick"
    for section in ("data", "model", "loss", "training", "output"):
        fields = shape.fields[section].config_type.fields
        assert set(fields) == set(RunConfig.model_fields[section].annotation.model_fields)
        for key, field in fields.items():
            expected = getattr(getattr(quick, section), key)
            assert field.default_provided and field.default_value == expected, (section, key)
    assert shape.fields["model"].config_type.fields["params"].default_value["channels"] == yaml.safe_load(
        open("configs/quick.yaml"))["model"]["params"]["channels"]
    assert TrainedModelConfig().model_dump() == quick.to_dict() | {"preset": "quick"}


def test_a_preset_with_overrides_on_top_is_one_validated_config():
    from crrecon_pipeline.train.config import preset_with_overrides

    default = load_config("default")
    cfg = validate(preset_with_overrides("default", {"training": {"epochs": 2}, "loss": {"params": {"w_corr": 0.1}}}))
    assert cfg.model.name == default.model.name and cfg.training.lr == default.training.lr
    assert cfg.training.epochs == 2
    assert cfg.loss.params == default.loss.params | {"w_corr": 0.1}  # params merge key by key
    # another model: the preset's params (cnn_field's) do not follow it
    assert validate(preset_with_overrides("quick", {"model": {"name": "crrecon_gru"}})).model.params == {}
    other = {"name": "crrecon_weighted_smooth", "params": {"w_smooth": 0.3}}
    assert validate(preset_with_overrides("quick", {"loss": other})).loss.params == {"w_smooth": 0.3}


def test_the_launchpad_preset_picker_resolves_before_validation(tmp_path):
    """`preset: default` with one override: the run validates the default preset's model (crrecon_xattn), not the
    quick values the launchpad shows as defaults; an unknown preset is refused by the schema."""
    from crrecon_pipeline.defs.assets.training import trained_model
    from crrecon_pipeline.defs.resources import CrreconPaths, ModelChecks, TrainingDevice

    def launch(config):
        return dg.materialize([trained_model], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                              resources={"paths": CrreconPaths(home=str(tmp_path)),
                                         "device": TrainingDevice(device="cpu"), "model_checks": ModelChecks()},
                              run_config={"ops": {"trained_model": {"config": config}}})

    result = launch({"preset": "default", "model": {"params": {"fields": 8}}})
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    assert "model.params.fields: not a parameter of model crrecon_xattn" in description, description
    with pytest.raises(dg.DagsterInvalidConfigError, match="preset"):
        launch({"preset": "no_such_preset"})


def test_launchpad_run_config_is_validated_by_the_schema(tmp_path):
    from crrecon_pipeline.defs.assets.training import trained_model
    from crrecon_pipeline.defs.resources import CrreconPaths, ModelChecks, TrainingDevice

    for override, expected in (({"training": {"lr": float("inf")}}, "training.lr"),
                               ({"output": {"log_file": "../../x.txt"}}, "output.log_file"),
                               ({"model": {"params": {"depth": 3}}}, "model.params.depth")):
        result = dg.materialize([trained_model], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                resources={"paths": CrreconPaths(home=str(tmp_path)),
                                           "device": TrainingDevice(device="cpu"),
                                           "model_checks": ModelChecks()},
                                run_config={"ops": {"trained_model": {"config": override}}})
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        description = failure.step_failure_data.user_failure_data.description
        assert expected in description and len(description.splitlines()) == 1, description
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.txt"))


def test_unknown_launchpad_keys_are_refused_before_the_run(tmp_path):
    from crrecon_pipeline.defs.assets.training import trained_model
    from crrecon_pipeline.defs.resources import CrreconPaths, ModelChecks, TrainingDevice

    with pytest.raises(dg.DagsterInvalidConfigError, match="epoch"):
        dg.materialize([trained_model],
                       resources={"paths": CrreconPaths(home=str(tmp_path)), "device": TrainingDevice(),
                                  "model_checks": ModelChecks()},
                       run_config={"ops": {"trained_model": {"config": {"training": {"epoch": 1}}}}})


def test_next_run_yaml_round_trips(tmp_path):
    cfg = load_config("default", ["training.epochs=4"])
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(tmp_path / "n.yaml") == cfg


def test_the_validated_config_is_an_object_that_changes_only_into_new_ones():
    """load_config/validate return the frozen RunConfig; a change is a new validated object, the original stays."""
    from pydantic import ValidationError

    cfg = load_config("quick")
    assert isinstance(cfg, RunConfig) and isinstance(validate(cfg.to_dict()), RunConfig)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training.epochs = 5
    plain = cfg.to_dict()
    plain["training"]["epochs"] = 5
    plain["model"]["params"]["fields"] = 1
    assert cfg.training.epochs == 40 and cfg.model.params["fields"] == 64, "to_dict is a copy"
    tuned = cfg.replaced("training.init_from", "pre/best.pt")
    assert tuned is not cfg and tuned.training.init_from == "pre/best.pt" and cfg.training.init_from == ""
    assert tuned.flat().keys() == cfg.flat().keys() and RunConfig.from_dict(tuned.to_dict()) == tuned
    with pytest.raises(ConfigError, match=r"^--x: training\.epochs: "):
        cfg.with_overrides({"training.epochs": 0}, "--x")
    with pytest.raises(ConfigError, match=r"^next run: training\.epoch: unknown key"):
        cfg.replaced("training.epoch", 3, "next run")
    assert cfg.training.epochs == 40 and cfg.training.init_from == ""


def test_from_dict_names_the_dotted_key_and_no_unchecked_config_exists():
    with pytest.raises(ConfigError, match=r"^ckpt\.pt: data\.augment_shift: unknown key$"):
        RunConfig.from_dict({"data": {"augment_shift": False}}, "ckpt.pt")
    with pytest.raises(ConfigError, match=r"^config\.json: model\.params\.depth: not a parameter of model cnn_field"):
        RunConfig.from_dict({"model": {"name": "cnn_field", "params": {"depth": 3}}}, "config.json")
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        RunConfig.from_dict([1, 2], "x")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="model.name: unknown model"):  # built directly: checked all the same
        RunConfig(model={"name": "nope"})


def test_the_launchpad_selectors_resolve_to_paths_before_the_one_validation(tmp_path):
    """'pretrained_model' and a run id are Dagster's words: defs/handoff.py turns them into checkpoint paths on the
    launchpad's plain values, and the RunConfig is validated once, from paths."""
    from crrecon_pipeline.defs.handoff import run_config

    instance = dg.DagsterInstance.ephemeral()
    launchpad = load_config("quick").to_dict()
    launchpad["training"]["init_from"] = "pretrained_model"
    with pytest.raises(ConfigError, match="pretrained_model has no materialization"):
        run_config(instance, launchpad, tmp_path)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "pretrained_model", metadata={"checkpoint": dg.MetadataValue.path("/runs/pre/best.pt")}))
    resolved = run_config(instance, launchpad, tmp_path)
    assert isinstance(resolved, RunConfig) and resolved.training.init_from == "/runs/pre/best.pt"
    assert launchpad["training"]["init_from"] == "pretrained_model"  # the caller's values are left as they are
    launchpad["training"] |= {"init_from": "", "resume_from": "abc123"}
    with pytest.raises(ConfigError, match="'abc123': no checkpoint"):
        run_config(instance, launchpad, tmp_path)
    (tmp_path / "abc123").mkdir()
    (tmp_path / "abc123" / "last.pt").write_bytes(b"x")
    assert run_config(instance, launchpad, tmp_path).training.resume_from == str(tmp_path / "abc123" / "last.pt")
