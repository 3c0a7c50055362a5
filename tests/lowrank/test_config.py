"""Config loading: base: inheritance, --set overrides, and one clear error per bad preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lowrank.config import ExperimentConfig, load, parse_override
from lowrank.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


GOOD = {"name": "t", "model": {"name": "tiny_convnet", "kwargs": {"width": 8}},
        "data": {"name": "synthetic", "kwargs": {"image_size": 8, "channels": 1}},
        "train": {"epochs": 2, "lr": 0.1}}


def test_every_shipped_preset_validates():
    presets = sorted((REPO / "presets").glob("*.yaml"))
    assert presets, "no presets found"
    for preset in presets:
        assert isinstance(load(preset), ExperimentConfig), preset


def test_base_merge_child_wins_and_lists_replace(tmp_path):
    write(tmp_path / "parent.yaml", {**GOOD, "train": {"epochs": 5, "lr": 0.2,
                                                       "schedule": {"name": "multistep", "milestones": [1, 2, 3]}}})
    write(tmp_path / "child.yaml", {"base": "parent.yaml", "name": "child",
                                     "train": {"lr": 0.05, "schedule": {"milestones": [4]}}})
    config = load(tmp_path / "child.yaml")
    assert config.name == "child"
    assert config.train.epochs == 5          # inherited
    assert config.train.lr == 0.05           # child wins
    assert config.train.schedule.name == "multistep"
    assert config.train.schedule.milestones == [4]  # lists replaced whole, not concatenated
    assert config.model.kwargs == {"width": 8}


def test_base_chain_of_three_resolves_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "root.yaml", GOOD)
    write(tmp_path / "sub" / "mid.yaml", {"base": "../root.yaml", "train": {"epochs": 7}})
    write(tmp_path / "leaf.yaml", {"base": "sub/mid.yaml", "train": {"seed": 3}})
    config = load(tmp_path / "leaf.yaml")
    assert (config.train.epochs, config.train.seed, config.name) == (7, 3, "t")


def test_overrides_are_yaml_typed(tmp_path):
    preset = write(tmp_path / "p.yaml", GOOD)
    config = load(preset, ["train.epochs=3", "train.lr=1e-2", "train.nesterov=true",
                           "train.schedule.milestones=[1, 2]", "train.schedule.name=multistep",
                           "data.augment.cutout=4", "model.kwargs.width=16", "name=renamed"])
    assert config.train.epochs == 3 and isinstance(config.train.epochs, int)
    assert config.train.lr == pytest.approx(0.01)
    assert config.train.nesterov is True
    assert config.train.schedule.milestones == [1, 2]
    assert config.data.augment.cutout == 4
    assert config.model.kwargs["width"] == 16
    assert config.name == "renamed"


def test_parse_override_keeps_strings_with_equals():
    assert parse_override("name=a=b") == (["name"], "a=b")


def test_resolved_config_round_trips(tmp_path):
    config = load(write(tmp_path / "p.yaml", GOOD), ["train.epochs=4"])
    again = ExperimentConfig.model_validate(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config


# Each bad preset: (description, file contents or dict, overrides, key that must be named, file-name part)
BAD = [
    ("unknown top-level key", {**GOOD, "trian": {}}, [], "trian"),
    ("unknown nested key", {**GOOD, "train": {"epochs": 2, "learning_rate": 0.1}}, [], "train.learning_rate"),
    ("wrong type", {**GOOD, "train": {"epochs": "many"}}, [], "train.epochs"),
    ("out of range", {**GOOD, "train": {"epochs": 0}}, [], "train.epochs"),
    ("negative weight decay", {**GOOD, "train": {"weight_decay": -1}}, [], "train.weight_decay"),
    ("bad optimizer", {**GOOD, "train": {"optimizer": "lbfgs"}}, [], "train.optimizer"),
    ("bad schedule name", {**GOOD, "train": {"schedule": {"name": "exp"}}}, [], "train.schedule.name"),
    ("multistep without milestones", {**GOOD, "train": {"schedule": {"name": "multistep"}}}, [], "train.schedule"),
    ("piecewise lengths differ", {**GOOD, "train": {"schedule": {"name": "piecewise", "epochs": [0, 5, 24],
                                                                 "values": [0, 1]}}}, [], "train.schedule"),
    ("nesterov with adam", {**GOOD, "train": {"optimizer": "adam", "nesterov": True}}, [], "train"),
    ("bad device", {**GOOD, "train": {"device": "tpu"}}, [], "train"),
    ("unknown model", {**GOOD, "model": {"name": "vgg99"}}, [], "model.name"),
    ("unknown model kwarg", {**GOOD, "model": {"name": "tiny_convnet", "kwargs": {"depth": 3}}}, [], "model.kwargs.depth"),
    ("reserved model kwarg", {**GOOD, "model": {"name": "tiny_convnet", "kwargs": {"num_classes": 3}}}, [],
     "model.kwargs.num_classes"),
    ("unknown dataset", {**GOOD, "data": {"name": "svhn"}}, [], "data.name"),
    ("unknown dataset kwarg", {**GOOD, "data": {"name": "digits", "kwargs": {"size": 3}}}, [], "data.kwargs.size"),
    ("negative batch size", {**GOOD, "data": {"name": "digits", "batch_size": -4}}, [], "data.batch_size"),
    ("negative cutout", {**GOOD, "data": {"name": "digits", "augment": {"cutout": -1}}}, [], "data.augment.cutout"),
    ("unknown method", {**GOOD, "substitute": {"method": "fft"}}, [], "substitute.method"),
    ("budget above 1", {**GOOD, "substitute": {"method": "separable", "budget": 3}}, [], "substitute.budget"),
    ("hp and budget both", {**GOOD, "substitute": {"method": "separable", "hp": 0.5, "budget": 0.5}}, [], "substitute"),
    ("hp on a method without one", {**GOOD, "substitute": {"method": "separable", "hp": 2}}, [], "substitute.hp"),
    ("unknown method option", {**GOOD, "substitute": {"method": "separable", "options": {"rank": 3}}}, [],
     "substitute.options.rank"),
    ("section is a scalar", {**GOOD, "train": 5}, [], "train"),
    ("eval every zero", {**GOOD, "log": {"eval_every": 0}}, [], "log.eval_every"),
    ("amp mode", {**GOOD, "train": {"amp": "fp8"}}, [], "train.amp"),
    ("drop path of 1", {**GOOD, "train": {"drop_path_max": 1.0}}, [], "train.drop_path_max"),
    ("negative aux weight", {**GOOD, "train": {"aux_weight": -0.4}}, [], "train.aux_weight"),
    ("channels_last not a bool", {**GOOD, "train": {"channels_last": "maybe"}}, [], "train.channels_last"),
    ("teacher without checkpoint", {**GOOD, "teacher": {"verify": True}}, [], "teacher.checkpoint"),
    ("teacher model without name", {**GOOD, "teacher": {"checkpoint": "t.pt", "model": {"kwargs": {}}}}, [],
     "teacher.model.name"),
    ("unknown teacher model", {**GOOD, "teacher": {"checkpoint": "t.pt", "model": {"name": "vgg99"}}}, [],
     "teacher.model.name"),
    ("unknown teacher model kwarg", {**GOOD, "teacher": {"checkpoint": "t.pt", "model": {
        "name": "wrn", "kwargs": {"width": 3}}}}, [], "teacher.model.kwargs.width"),
    ("distill without teacher", {**GOOD, "distill": {"alpha": 0.5}}, [], "distill"),
    ("distill alpha above 1", {**GOOD, "teacher": {"checkpoint": "t.pt"}, "distill": {"alpha": 2}}, [],
     "distill.alpha"),
    ("distill temperature zero", {**GOOD, "teacher": {"checkpoint": "t.pt"}, "distill": {"temperature": 0}}, [],
     "distill.temperature"),
    ("unknown distill key", {**GOOD, "teacher": {"checkpoint": "t.pt"}, "distill": {"beta": 1000}}, [],
     "distill.beta"),
    ("imitation without teacher", {**GOOD, "imitation": {"stages": [{"name": "block", "epochs": 1}]}}, [],
     "imitation"),
    ("distill and imitation", {**GOOD, "teacher": {"checkpoint": "t.pt"}, "distill": {},
                               "imitation": {"stages": [{"name": "block", "epochs": 2}]}}, [], "imitation"),
    ("imitation epochs disagree", {**GOOD, "teacher": {"checkpoint": "t.pt"},
                                   "imitation": {"stages": [{"name": "block", "epochs": 1}]}}, [], "train.epochs"),
    ("imitation stage order", {**GOOD, "train": {}, "teacher": {"checkpoint": "t.pt"}, "imitation": {"stages": [
        {"name": "finetune", "epochs": 1}, {"name": "block", "epochs": 1}]}}, [], "imitation.stages"),
    ("unknown imitation stage", {**GOOD, "train": {}, "teacher": {"checkpoint": "t.pt"},
                                 "imitation": {"stages": [{"name": "warmup", "epochs": 1}]}}, [],
     "imitation.stages.0.name"),
    ("imitation stage without epochs", {**GOOD, "train": {}, "teacher": {"checkpoint": "t.pt"},
                                        "imitation": {"stages": [{"name": "block"}]}}, [], "imitation.stages.0.epochs"),
    ("imitation with no stages", {**GOOD, "train": {}, "teacher": {"checkpoint": "t.pt"},
                                  "imitation": {"stages": []}}, [], "imitation.stages"),
    ("nesterov with an adam stage", {**GOOD, "train": {"nesterov": True}, "teacher": {"checkpoint": "t.pt"},
                                     "imitation": {"stages": [{"name": "block", "epochs": 1, "optimizer": "adam"}]}},
     [], "imitation.stages.0.optimizer"),
    ("aux weight with imitation", {**GOOD, "train": {"aux_weight": 0.4}, "teacher": {"checkpoint": "t.pt"},
                                   "imitation": {"stages": [{"name": "block", "epochs": 1}]}}, [], "train.aux_weight"),
    ("override of unknown key", GOOD, ["train.epoch=3"], "train.epoch"),
    ("override with wrong type", GOOD, ["train.lr=fast"], "train.lr"),
    ("override into a scalar", GOOD, ["train.epochs.value=3"], "train.epochs.value"),
]


@pytest.mark.parametrize("description,data,overrides,key", BAD, ids=[b[0] for b in BAD])
def test_bad_preset_names_file_and_key(tmp_path, description, data, overrides, key):
    preset = write(tmp_path / "bad.yaml", data)
    with pytest.raises(ConfigError) as caught:
        load(preset, overrides)
    error = caught.value
    assert error.key == key, f"{description}: message names {error.key!r}: {error}"
    expected_file = "--set" if overrides else str(preset.resolve())
    assert error.file in (expected_file, str(preset)), error.file
    assert key in str(error)
    assert "Traceback" not in str(error)


def test_imitation_run_length_is_the_sum_of_its_stages(tmp_path):
    data = {**GOOD, "train": {"lr": 0.1}, "teacher": {"checkpoint": "missing-at-validation-time.pt"},
            "imitation": {"stages": [{"name": "block", "epochs": 2}, {"name": "finetune", "epochs": 3}]}}
    config = load(write(tmp_path / "p.yaml", data))
    assert config.train.epochs == 5
    again = ExperimentConfig.model_validate(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again.train.epochs == 5  # the resolved config (as saved in the run) stays consistent
    assert load(write(tmp_path / "p.yaml", data), ["train.epochs=5"]).train.epochs == 5


def test_error_names_the_base_file_that_set_the_bad_key(tmp_path):
    write(tmp_path / "parent.yaml", {**GOOD, "train": {"epochs": "ten"}})
    write(tmp_path / "child.yaml", {"base": "parent.yaml", "name": "child"})
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "child.yaml")
    assert caught.value.file.endswith("parent.yaml")
    assert caught.value.key == "train.epochs"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found") as caught:
        load(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(caught.value)


def test_missing_base_names_the_referencing_file(tmp_path):
    write(tmp_path / "child.yaml", {"base": "ghost.yaml"})
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "child.yaml")
    assert "ghost.yaml" in str(caught.value) and "child.yaml" in str(caught.value)


def test_base_cycle(tmp_path):
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "c.yaml"})
    write(tmp_path / "c.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle") as caught:
        load(tmp_path / "a.yaml")
    assert caught.value.key == "base"
    assert "a.yaml -> b.yaml -> c.yaml -> a.yaml" in str(caught.value)


def test_self_base_is_a_cycle(tmp_path):
    write(tmp_path / "a.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load(tmp_path / "a.yaml")


def test_yaml_syntax_error_names_line(tmp_path):
    preset = write(tmp_path / "broken.yaml", "name: x\ntrain:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="line") as caught:
        load(preset)
    assert "broken.yaml" in str(caught.value)


def test_top_level_list_rejected(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE") as caught:
        load(write(tmp_path / "p.yaml", GOOD), ["train.epochs"])
    assert caught.value.file == "--set"
