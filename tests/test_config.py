"""itercomp.config: sections, deprecated aliases, FIELD=VALUE overrides, flags and the YAML round trip."""

import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from itercomp.config import (
    ArgumentParser,
    add_config_arguments,
    config_from_dict,
    load_config,
    merge_values,
    parse_overrides,
    save_config,
    to_dict,
)
from itercomp.errors import ItercompError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Model:
    width: int = field(default=8, metadata={"help": "hidden width"})
    use_bias: bool = True
    aliases: ClassVar[dict[str, str]] = {"hidden": "width"}


@dataclass
class Stage:
    output_dir: str = field(metadata={"help": "where results go"})
    learning_rate: float = field(default=1e-4, metadata={"help": "peak learning rate"})
    max_steps: int = 10
    seeds: tuple[int, ...] = (0,)
    weights: dict[str, float] = field(default_factory=lambda: {"a": 1.0})
    later: dict = field(default_factory=dict)
    model: Model = field(default_factory=Model)
    use_lora: bool = False
    note: str | None = None
    aliases: ClassVar[dict[str, str]] = {"out": "output_dir", "lr": "learning_rate", "steps": "max_steps"}


def test_a_dataclass_field_is_a_section_in_yaml_and_on_the_command_line(tmp_path):
    path = tmp_path / "stage.yaml"
    path.write_text(yaml.safe_dump({"output_dir": "x", "model": {"width": 16, "use_bias": False}}))
    config = load_config(Stage, ["--config", str(path), "--model.width", "32"])
    assert config.model == Model(width=32, use_bias=False)  # the flag changes one field, the YAML keeps the other
    assert config_from_dict(Stage, {"output_dir": "x", "model": {"width": "4"}}).model.width == 4
    with pytest.raises(ItercompError, match=r"Stage.model: unknown keys \['depth'\]; valid keys are"):
        config_from_dict(Stage, {"output_dir": "x", "model": {"depth": 3}})


def test_an_old_name_maps_to_the_new_one_with_a_deprecation_warning_naming_both(tmp_path):
    with pytest.warns(DeprecationWarning, match="'lr' is deprecated, use 'learning_rate'"):
        config = config_from_dict(Stage, {"out": "x", "lr": "3e-6", "model": {"hidden": 12}})
    assert config.output_dir == "x" and config.learning_rate == 3e-6 and config.model.width == 12
    path = tmp_path / "old.yaml"
    path.write_text("out: runs/a\nsteps: 5\n")
    with pytest.warns(DeprecationWarning, match="'steps' is deprecated, use 'max_steps'"):
        config = load_config(Stage, ["--config", str(path), "--lr", "0.5"])
    assert (config.output_dir, config.max_steps, config.learning_rate) == ("runs/a", 5, 0.5)
    with pytest.warns(DeprecationWarning, match="'hidden' is deprecated, use 'width'"):
        assert load_config(Stage, ["--out", "x", "--model.hidden", "6"]).model.width == 6


def test_giving_the_old_and_the_new_name_is_an_error_naming_both(tmp_path):
    with pytest.raises(ItercompError, match="both 'lr' and 'learning_rate' are set"):
        config_from_dict(Stage, {"output_dir": "x", "lr": 1, "learning_rate": 2})
    path = tmp_path / "both.yaml"
    path.write_text("output_dir: x\nmodel: {hidden: 4, width: 8}\n")
    with pytest.raises(ItercompError, match="both.yaml: Stage.model: both 'hidden' and 'width'"):
        load_config(Stage, ["--config", str(path)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names alone warn about nothing
        config_from_dict(Stage, {"output_dir": "x", "learning_rate": 1})


def test_field_value_overrides_nest_by_section_and_merge_key_by_key():
    overrides = parse_overrides(["max_steps=40", "model.width=64", "note="])
    assert overrides == {"max_steps": "40", "model": {"width": "64"}, "note": None}
    merged = merge_values({"output_dir": "x", "model": {"width": 8, "use_bias": False}}, overrides)
    config = config_from_dict(Stage, merged)
    assert config.max_steps == 40 and config.model == Model(width=64, use_bias=False) and config.note is None
    with pytest.raises(ItercompError, match="--set takes FIELD=VALUE pairs"):
        parse_overrides(["max_steps"])


def test_text_values_are_typed_once_by_the_field_type():
    config = config_from_dict(
        Stage,
        {
            "output_dir": "x",
            "seeds": "1,2",
            "weights": "a=2,b=0.5",
            "later": ["k=v"],
            "use_lora": "yes",
            "note": "null",
        },
    )
    assert config.seeds == (1, 2) and config.weights == {"a": 2.0, "b": 0.5} and config.use_lora is True
    assert config.later == {"k": "v"} and config.note is None
    with pytest.raises(ItercompError, match="Stage.max_steps must be int, got 'many'"):
        config_from_dict(Stage, {"output_dir": "x", "max_steps": "many"})
    with pytest.raises(ItercompError, match="incomplete config"):
        config_from_dict(Stage, {})


def test_flags_are_hyphenated_accept_underscores_and_booleans_are_flags(capsys):
    config = load_config(Stage, ["--output_dir", "x", "--max-steps", "3", "--use-lora", "--no-model.use-bias"])
    assert config.output_dir == "x" and config.max_steps == 3 and config.use_lora and not config.model.use_bias
    assert load_config(Stage, ["--output-dir", "x", "--use_lora", "true"]).use_lora  # the old `--flag VALUE`
    assert not load_config(Stage, ["--output-dir", "x", "--use-lora", "false"]).use_lora
    parser = ArgumentParser(prog="stage")
    add_config_arguments(parser, Stage)
    parser.print_help()
    help_text = capsys.readouterr().out
    assert "--max-steps" in help_text and "--max_steps" not in help_text and "--lr" not in help_text
    assert "--use-lora | --no-use-lora" in help_text and "USE_LORA" not in help_text
    assert "peak learning rate (default: 0.0001)" in help_text and "where results go (required)" in help_text


def test_yaml_round_trip(tmp_path):
    config = config_from_dict(Stage, {"output_dir": "x", "seeds": [3, 4], "model": {"width": 5}, "later": {"a": 1}})
    save_config(config, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data == to_dict(config) and data["seeds"] == [3, 4] and data["model"] == {"width": 5, "use_bias": True}
    assert config_from_dict(Stage, data) == config


# ---- the loop's config on the same loader ---------------------------------------------------------------------


def _iterate_args(argv):
    from itercomp.loop.config import IterateConfig

    parser = ArgumentParser(prog="itercomp iterate")
    add_config_arguments(parser, IterateConfig)
    return parser.parse_args(argv)


def test_the_loop_fine_tunes_with_the_recipe_under_its_overrides_typed_once():
    from itercomp.finetune.config import FeedbackConfig, FeedbackRunConfig
    from itercomp.loop.config import RECIPE_RUN_KEYS, IterateConfig, feedback_config, load_iterate_config

    recipe = load_config(FeedbackRunConfig, ["--config", str(ROOT / "recipes" / "configs" / "reward_ft_shapes.yaml")])
    budget = IterateConfig().finetune
    assert "learning_rate" not in budget  # the learning rate has one default, not a copy in the loop
    default = feedback_config(IterateConfig(), FeedbackConfig, output_dir="x")
    for f in fields(FeedbackConfig):  # every setting is the recipe's but the per-round budget and the run's own
        if f.name not in (*budget, *RECIPE_RUN_KEYS):
            assert getattr(default, f.name) == getattr(recipe, f.name), f.name
    assert default.max_steps == budget["max_steps"] <= recipe.max_steps  # a round is at most one recipe run
    assert default.batch_size == budget["batch_size"] < recipe.batch_size
    assert default.cpu is False and default.threads is None  # the recipe's machine settings stay the recipe's
    config = load_iterate_config(_iterate_args(["--finetune", "learning_rate=3e-6", "max_steps=7"]))
    assert config.finetune["learning_rate"] == "3e-6"  # text until the fine-tuning config class types it
    feedback = feedback_config(config, FeedbackConfig, {"num_inference_steps": 2}, output_dir="x", seed=5)
    assert (feedback.learning_rate, feedback.max_steps, feedback.seed) == (3e-6, 7, 5)
    assert feedback.num_inference_steps == 2  # the base member's sampling over the recipe's
    with pytest.raises(ItercompError, match=r"finetune: unknown keys \['learning_rte'\]"):
        feedback_config(IterateConfig(finetune={"learning_rte": 1}), FeedbackConfig, output_dir="x")


def test_the_loop_takes_hyphenated_and_old_flags(tmp_path):
    from itercomp.loop.config import changed_fields, load_iterate_config

    config = load_iterate_config(_iterate_args(["--base-member", "base", "--skip-unavailable", "--eval_seeds", "1"]))
    assert config.skip_unavailable and config.eval_seeds == (1,)
    with pytest.warns(DeprecationWarning, match="'out' is deprecated, use 'output_dir'"):
        config = load_iterate_config(_iterate_args(["--out", str(tmp_path / "run")]))
    assert config.output_dir == str(tmp_path / "run")
    # A run saved before the rename (`out:`) resumes: the old key maps, a field it lacks counts as unchanged.
    with pytest.warns(DeprecationWarning):
        assert changed_fields(config, {"out": str(tmp_path / "run"), "rounds": 9}) == []
