import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from itercomp.cli import build_parser, main


def _all_commands(parser, prefix=()):
    """Every (sub)command path of the CLI, found by walking argparse's subparsers."""
    yield prefix
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _all_commands(sub, (*prefix, name))


def test_every_command_has_help(capsys):
    paths = list(_all_commands(build_parser()))
    assert ("world", "score") in paths
    for path in paths:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_console_script_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "itercomp.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "world" in out.stdout


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["world", "prompts", "--aspect", "colour"], "invalid choice"),
        (["world", "score", "--prompts", "missing.txt", "--images", ".", "--out", "x.json"], "not found"),
        (["world", "prompts", "--aspect", "complex", "-n", "-3"], "-n must be >= 0"),
    ],
)
def test_user_errors_one_line_exit_2(argv, needle, tmp_path):
    out = subprocess.run([sys.executable, "-m", "itercomp.cli", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_prompt_in_file_is_one_clear_line(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle and a blue square\na red circle beside a blue square\n")
    (tmp_path / "imgs").mkdir()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "itercomp.cli",
            "world",
            "score",
            "--prompts",
            str(prompts),
            "--images",
            str(tmp_path / "imgs"),
            "--out",
            str(tmp_path / "s.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "p.txt:2" in out.stderr and "beside" in out.stderr


def test_sample_then_score_round_trip(tmp_path, capsys):
    assert (
        main(
            ["world", "sample", "--aspect", "all", "-n", "2", "--images-per-prompt", "2", "--output-dir", str(tmp_path)]
        )
        == 0
    )
    assert (tmp_path / "grid.png").is_file()
    assert (
        main(
            [
                "world",
                "score",
                "--prompts",
                str(tmp_path / "prompts.jsonl"),
                "--images",
                str(tmp_path / "images"),
                "--out",
                str(tmp_path / "score.json"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "score.json").read_text())
    assert len(report["images"]) == 16
    assert all(s["accuracy"] == 1.0 for s in report["summary"].values())
    assert all(row["failed"] == 0 and row["checked"] > 0 for row in report["predicates"].values())
    out = capsys.readouterr().out
    assert "accuracy" in out and "what fails" in out


def test_score_matches_t2i_compbench_names(tmp_path, capsys):
    from PIL import Image

    from itercomp.world import render

    prompt = "a red circle to the left of a blue square"
    (tmp_path / "prompts.txt").write_text(prompt + "\n")
    (tmp_path / "samples").mkdir()
    Image.fromarray(render(prompt, 0)).save(tmp_path / "samples" / f"{prompt}_000001.png")
    assert (
        main(
            [
                "world",
                "score",
                "--prompts",
                str(tmp_path / "prompts.txt"),
                "--images",
                str(tmp_path / "samples"),
                "--out",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "s.json").read_text())["summary"]["spatial_relationship"]["accuracy"] == 1.0


# ---- conventions of every command -----------------------------------------------------------------------------


def test_help_imports_no_torch():
    code = (
        "import sys; from itercomp.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_help_choices_match_the_reward_ensemble():
    from reward_models.config import AGGREGATES, CONTRAST_NAMES, VIEW_NAMES
    from reward_models.ensemble import CONTRASTS, VIEWS, aggregate_rewards

    assert tuple(CONTRASTS) == CONTRAST_NAMES and tuple(VIEWS) == VIEW_NAMES
    assert aggregate_rewards.__globals__["AGGREGATES"] is AGGREGATES


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_flags_are_hyphenated_booleans_are_flags_and_defaults_shown(capsys):
    text = _help(["iterate"], capsys)
    assert "--base-member BASE_MEMBER" in text and "--base_member" not in text and "--out " not in text
    assert "--human-serve | --no-human-serve" in text and "HUMAN_SERVE" not in text
    assert "--use-lora | --no-use-lora" in _help(["finetune"], capsys)
    assert "new train-split prompts per aspect ranked each round (default: 24)" in " ".join(text.split())
    for argv in (["finetune"], ["rewards", "train"], ["pretrain"]):
        text = _help(argv, capsys)
        assert "(default: " in text and not any("_" in w for w in text.split() if w.startswith("--")), argv


def test_underscore_spellings_and_old_names_still_work(tmp_path):
    argv = ["world", "sample", "--aspect", "spatial_relationship", "-n", "1", "--images_per_prompt", "1"]
    out = subprocess.run([sys.executable, "-m", "itercomp.cli", *argv, "--out", str(tmp_path / "s")],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0 and (tmp_path / "s" / "prompts.jsonl").is_file()
    assert out.stderr.splitlines()[0] == "itercomp: warning: --out is deprecated, use --output-dir"


def test_examples_stay_on_their_own_lines():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "recipes" / "train_reward_models.py"), "--help"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    lines = out.stdout.splitlines()
    assert "    python recipes/train_reward_models.py --config FILE            # one process" in lines
    assert any(line.startswith("    accelerate launch recipes/train_reward_models.py --config") for line in lines)
