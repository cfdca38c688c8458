"""The ranking page (Gradio): one task at a time, every image with a rank control, the aspect's guideline.

Two events per submission: `save` validates and stores the ranking (its only output is a State, so a refusal's
error toast never covers the rank controls), and a chained `.success` loads the next task with the controls
cleared. Both touch the database and run with no concurrency limit, so annotators never wait on each other.
"""

from __future__ import annotations

import re
import string

import gradio as gr

from annotation_app.config import AppConfig
from annotation_app.images import pixels_only
from annotation_app.store import Assignment, Store, SubmissionError
from annotation_app.tasks import ASPECT_TITLES
from itercomp.errors import ItercompError

LETTERS = string.ascii_uppercase

CSS = """
.candidate img { image-rendering: pixelated; object-fit: contain; }
#prompt-text { font-size: 1.35em; }
"""

# Keyboard: letters rank the images best to worst (each press gives that image the next free rank), Enter submits.
KEYBOARD_JS = """
<script>
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing || event.altKey || event.metaKey) return;
  const target = event.target;
  const typing = target && (target.tagName === "TEXTAREA" ||
    (target.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(target.type)));
  if (typing) return;
  if (event.key === "Enter") {
    const button = document.querySelector("#submit-ranking");
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
    return;
  }
  if (event.ctrlKey || event.key.length !== 1) return;
  const group = document.querySelector("#rank-" + event.key.toUpperCase());
  if (!group || group.offsetParent === null || group.querySelector("input:checked")) return;
  const taken = new Set(Array.from(document.querySelectorAll(".rank-control input:checked"), (i) => i.value));
  const free = Array.from(group.querySelectorAll("input[type=radio]")).find((i) => !taken.has(i.value));
  if (free) { event.preventDefault(); free.click(); }
});
</script>
"""


# Every ASCII punctuation character: CommonMark lets a backslash make any of them literal.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def literal_markdown(text: str) -> str:
    """Markdown that shows `text` literally: neither HTML nor Markdown in a prompt (imported from any file) becomes
    an element, so a prompt cannot make annotators' browsers fetch a URL, follow a link or restyle the page."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def prompt_heading(prompt: str) -> str:
    """The prompt as the ranking page shows it (a Markdown heading, the prompt's text literal)."""
    return f"## “{literal_markdown(prompt)}”"


def slot_count(store: Store, round: int) -> int:
    return max([2] + [len(store.task(t).candidates) for t in store.task_ids(round)])


def build_ui(store: Store, config: AppConfig, slots: int) -> gr.Blocks:
    if slots > len(LETTERS):
        raise ItercompError(
            f"a task shows at most {len(LETTERS)} images (one letter each), but a prompt of this gallery has {slots}; "
            "render fewer generators or seeds per prompt"
        )

    def progress_line(user: str) -> str:
        p = store.progress(user, overlap=config.overlap, round=config.round)
        return (
            f"**{user}** · you: {p['you_done']} done · overall: {p['towards_target']} of {p['target']} rankings "
            f"({p['tasks_complete']} of {p['tasks']} tasks complete, {p['overlap']} annotator(s) per task)"
        )

    def render(assignment: Assignment | None, user: str) -> list:
        """One fresh update per output (a shared dict would alias them)."""
        if assignment is None:
            return [
                None,
                gr.update(value="## All done\nNothing is left for you to rank in this round. Thank you!"),
                gr.update(value=""),
                gr.update(value=""),
                gr.update(value=progress_line(user)),
                *[gr.update(value=None) for _ in range(slots)],
                *[gr.update(value=None, choices=[]) for _ in range(slots)],
                *[gr.update(visible=False) for _ in range(slots)],
                gr.update(interactive=False),
            ]
        task, shown = assignment.task, assignment.shown_order
        n = len(shown)
        ranks = [str(r) for r in range(1, n + 1)]
        # Blind: the page gets pixels without metadata (Gradio caches them under a hash of their bytes), and the
        # state (kept on the server) speaks in the task's blind ids, as the API does.
        state = {
            "key": assignment.key, "prompt_id": task.prompt_id, "aspect": task.aspect, "shown": assignment.shown_slots,
        }  # fmt: skip
        return [
            state,
            gr.update(value=f"### Rank for: {ASPECT_TITLES[task.aspect]}"),
            gr.update(value=prompt_heading(task.prompt)),
            gr.update(value=config.guideline_texts[task.aspect]),  # Markdown from the coordinator's file
            gr.update(value=progress_line(user)),
            *[
                gr.update(value=pixels_only(task.image_path(shown[i])), label=f"Image {LETTERS[i]}") if i < n else gr.update(value=None)
                for i in range(slots)
            ],
            *[
                gr.update(value=None, choices=ranks, label=f"Rank of {LETTERS[i]} (1 = best)") if i < n else gr.update(value=None, choices=[])
                for i in range(slots)
            ],
            *[gr.update(visible=i < n) for i in range(slots)],
            gr.update(interactive=True),
        ]  # fmt: skip

    def show(request: gr.Request):
        user = request.username
        assignment = store.next_task(
            user, overlap=config.overlap, round=config.round, lease_seconds=config.lease_seconds
        )
        return render(assignment, user)

    def save(request: gr.Request, state, *ranks):
        if not state:
            raise gr.Error("No task is loaded: reload the page.", print_exception=False)
        shown = state["shown"]
        letters = LETTERS[: len(shown)]
        ranks = list(ranks[: len(shown)])
        missing = [letter for letter, r in zip(letters, ranks) if r in (None, "")]
        if missing:
            raise gr.Error(
                f"Give every image a rank: {', '.join(missing)} {'has' if len(missing) == 1 else 'have'} none yet.",
                print_exception=False,
            )
        holders: dict[str, list[str]] = {}
        for letter, r in zip(letters, ranks):
            holders.setdefault(str(r), []).append(letter)
        clashes = {r: who for r, who in holders.items() if len(who) > 1}
        if clashes:
            r, who = min(clashes.items())
            raise gr.Error(
                f"Rank {r} is given to {' and '.join(who)}: each rank goes to exactly one image.", print_exception=False
            )
        order = [image for _, image in sorted(zip((int(r) for r in ranks), shown))]
        try:
            result = store.submit(
                request.username, state["key"], order, prompt_id=state["prompt_id"], aspect=state["aspect"], blind=True
            )
        except SubmissionError as e:
            raise gr.Error(e.message, print_exception=False) from None
        return {**state, "saved": result.ranking_id}

    with gr.Blocks(title=config.title) as demo:
        state = gr.State(None)
        with gr.Row():
            aspect_md = gr.Markdown(elem_id="aspect-title")
            gr.Button("Log out", link="/logout", size="sm", scale=0, min_width=90)
        prompt_md = gr.Markdown(elem_id="prompt-text")
        with gr.Accordion("Guideline", open=True):
            guideline_md = gr.Markdown(elem_id="guideline")
        gr.Markdown(
            "Give each image a rank, 1 = best. Keyboard: press the images' letters from best to worst, "
            "then **Enter** to submit."
        )
        images, radios, columns = [], [], []
        with gr.Row(equal_height=True):
            for i in range(slots):
                with gr.Column(min_width=170, visible=False, elem_classes=["candidate-slot"]) as column:
                    images.append(
                        gr.Image(
                            label=f"Image {LETTERS[i]}", type="pil", format="png", interactive=False, height=200,
                            buttons=[], elem_classes=["candidate"], elem_id=f"image-{LETTERS[i]}",
                        )
                    )  # fmt: skip
                    radios.append(
                        gr.Radio(
                            choices=[], label=f"Rank of {LETTERS[i]}", elem_id=f"rank-{LETTERS[i]}",
                            elem_classes=["rank-control"],
                        )
                    )  # fmt: skip
                columns.append(column)
        submit = gr.Button("Submit ranking (Enter)", variant="primary", elem_id="submit-ranking", interactive=False)
        progress_md = gr.Markdown(elem_id="progress")

        outputs = [state, aspect_md, prompt_md, guideline_md, progress_md, *images, *radios, *columns, submit]
        # Private: programs use the JSON API under /api, not Gradio's client API.
        private = {"concurrency_limit": None, "api_visibility": "private"}
        demo.load(show, inputs=None, outputs=outputs, **private)
        submit.click(save, inputs=[state, *radios], outputs=[state], **private).success(
            show, inputs=None, outputs=outputs, **private
        )
    return demo
