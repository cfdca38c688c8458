import json
import subprocess
import sys

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
        main(["world", "sample", "--aspect", "all", "-n", "2", "--images-per-prompt", "2", "--out", str(tmp_path)]) == 0
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
