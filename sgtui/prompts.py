"""Prompts: the paper's input-generation template and the few-shot meta prompt.

The input-generation prompt is a raw completion prompt (no chat formatting), as in the paper.
The meta prompt is the same few-shot conversation for annotation, training and evaluation; it
is rendered with the model's own chat template (SmolLM2 uses ChatML, Vicuna its own), so the
conversation is kept as messages here and rendered by the backend.
"""

from __future__ import annotations

from typing import Sequence

from backends.base import ChatMessage

from .task import Task

RULE = "-" * 92

# Structure and wording follow the reference template (SELF_GUIDE.md section 2.3); the
# reference's typos are not reproduced.
_INPUT_HEAD = """
As an InputGenerator, your task is to generate a new [input] based on the [instruction] and some example [input].

Try your best to ensure that the new [input] you generate is distinct from the provided [input] while maintaining a diverse, detailed, precise, comprehensive, and high-quality response.

Avoid generating a new [input] that is the same as the provided [input].
{rule}
[instruction]

{instruction}
{rule}
Here are some high-quality [input] for the [instruction]. These [input] can provide you with very strict format requirements. You should pay extreme attention to them!!!

Some high-quality [input]:

{high}{rule}
These are some additional [input]. Their formats and contents may not be accurate. However, you may also refer to the content of them.

Some low-quality [input]:

{low}{rule}
"""

_INPUT_TAIL = """After seeing these example [input], you should generate a new [input] that is distinct from all the example [input], following the [instruction] and the format of the high-quality [input]. Think twice before generating a new [input]. Only respond with the new [input] without any other information.

[input]=
"""

_INPUT_TAIL_LABEL = """After seeing these example [input], you should generate a new [input] for which the expected [output] is {label}, distinct from all the example [input], following the [instruction] and the format of the high-quality [input]. Think twice before generating a new [input]. Only respond with the new [input] without any other information. The expected [output] of the new [input] should be {label}.

[input]=
"""


def _block(inputs: Sequence[str]) -> str:
    return "".join(f'[input]="{x}"\n\n' for x in inputs)


def input_generation_prompt(
    task: Task, high: Sequence[str], low: Sequence[str], label: str | None = None
) -> str:
    """The paper's input-generation prompt ("paper" mode)."""
    head = _INPUT_HEAD.format(
        rule=RULE,
        instruction=task.instruction,
        high=_block(high),
        low=_block(low) if low else "N/A\n",
    )
    tail = _INPUT_TAIL_LABEL.format(label=label) if label is not None else _INPUT_TAIL
    return head + tail


# where a model leaves the input it was asked for: the next item, or an answer (a base model
# writes "Output" after an input as the completion layout would; Gemma 3 270M did)
SMALL_STOPS = ("###", "\nInput:", "\nOutput", "\nAnswer:")


def small_input_prompt(
    task: Task, items: Sequence[tuple[str, str | None]], label: str | None = None
) -> str:
    """The "small" mode's plain completion prompt: the instruction, then example inputs as
    delimited items, and an open item for the model to continue. A classification prompt groups
    the examples under their answers and ends in the group of the chosen pseudo-label."""
    head = f"{task.instruction.strip()}\n\n"
    if label is None:
        body = "".join(f"Input: {x.strip()}\n###\n" for x, _ in items)
        return head + "Example inputs for this task, each ending with ###.\n\n" + body + "Input:"
    groups: dict[str, list[str]] = {lab: [] for lab in task.labels}
    for x, lab in items:
        groups.setdefault(lab or "", []).append(x)
    order = [lab for lab in task.labels if lab != label and groups.get(lab)] + [label]
    body = ""
    for lab in order:
        body += f'Inputs whose answer is "{lab}":\n'
        body += "".join(f"Input: {x.strip()}\n###\n" for x in groups.get(lab, []))
        body += "\n" if lab != label else ""
    return (
        head
        + "Example inputs for this task, grouped by answer, each ending with ###.\n\n"
        + body
        + "Input:"
    )


SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant.\n"
    "The assistant gives concise answers to the user's questions."
)


def meta_messages(
    task: Task, new_input: str, extra_pairs: Sequence[tuple[str, str]] = ()
) -> list[ChatMessage]:
    """The few-shot conversation of SELF_GUIDE.md section 5.1, without the reference code's
    stray "None". `extra_pairs` adds more demonstrations (the Self-ICL baseline)."""
    msgs = [
        ChatMessage("system", SYSTEM),
        ChatMessage(
            "user",
            "The artificial intelligence assistant only needs to help annotate "
            f"label. The task is: {task.instruction}",
        ),
        ChatMessage("assistant", "Okay."),
    ]
    for ex_in, ex_out in [(e.input, e.output) for e in task.examples] + list(extra_pairs):
        msgs.append(ChatMessage("user", f"[input] = {ex_in}"))
        msgs.append(ChatMessage("assistant", ex_out))
    msgs.append(ChatMessage("user", f"[input] = {new_input}"))
    return msgs
