"""`gallery generate` checks shapes-world prompts against the world's rules where it reads them; other text
(prompts for real text-to-image models) passes."""

import pytest

from gallery.run import UNKNOWN_ASPECT, load_prompt_file, prompt_entry
from itercomp.cli import main
from itercomp.errors import ItercompError


@pytest.mark.parametrize(
    "prompt,rule,fix",
    [
        ("a red circle and a red square", "every object needs its own color", "refer back to an object"),
        ("a small blue square inside a large hollow cyan circle", "only a hollow square has room inside",
         "make the container a square"),
    ],
)  # fmt: skip
def test_a_shapes_prompt_that_breaks_a_rule_is_refused_naming_prompt_rule_and_fix(prompt, rule, fix):
    with pytest.raises(ItercompError) as error:
        prompt_entry(prompt)
    message = str(error.value)
    assert prompt in message and rule in message and fix in message


def test_other_prompts_pass(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("A photo of an astronaut riding a horse\na red circle to the left of a blue square\n")
    entries = load_prompt_file(path)
    assert [e["aspect"] for e in entries] == [UNKNOWN_ASPECT, "spatial_relationship"]
    assert prompt_entry("a red circle and a red square in a forest")["aspect"] == UNKNOWN_ASPECT  # not the world's


def test_generate_refuses_before_rendering(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a green circle and a blue square\na red circle and a red square\n")
    out = tmp_path / "run"
    argv = ["gallery", "generate", "--prompts", str(tmp_path / "p.txt"), "--members", "bag_of_words", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'a red circle and a red square'" in err and "every object needs its own color" in err
    assert not list(out.glob("images/*.png"))
