"""Chat-template rendering shared by the backends: the model's own Jinja template in a sandbox,
or a plain completion layout when a model has none (a base model, or a GGUF whose conversion
dropped the template)."""

from __future__ import annotations

from typing import Sequence

from .base import ChatMessage, SamplingParams

# The completion layout for a model without a chat template: each user turn an "Input:" line,
# each assistant turn an "Output:" line with the answer on the next line, a blank line between
# pairs, and the generation cue "Output:\n". The answer sits after the same "Output:\n" in the
# demonstrations, in the cue and in the training text (prompt + answer + EOS), so a base model
# sees its cue as it saw the examples. (The paper's Vicuna layout wrote its demonstrations as
# "ASSISTANT: y" but its cue as "ASSISTANT:\n"; after that cue Gemma 3 270M base wrote the next
# turn instead of an answer, every time.)
INPUT, OUTPUT = "Input:", "Output:"
# where the next turn starts: a base model has no end-of-turn token to stop at and runs on into
# "\n\nInput: ..." until the token limit without these
COMPLETION_TURN_STOPS = ("\n" + INPUT, "\n" + OUTPUT)


def render_template(
    template: str | None,
    messages: Sequence[ChatMessage],
    bos: str = "",
    eos: str = "",
    add_generation_prompt: bool = True,
) -> str:
    msgs = [{"role": m.role, "content": m.content} for m in messages]
    if not template:
        return render_completion(messages, add_generation_prompt)
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str):
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=msgs, bos_token=bos, eos_token=eos, add_generation_prompt=add_generation_prompt
    )


def render_completion(messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
    """The completion layout (see COMPLETION_TURN_STOPS): the system text, then
    "Input: user text" / "Output:\nassistant text" pairs."""
    parts = []
    for m in messages:
        if m.role == "system":
            parts.append(m.content + "\n\n")
        elif m.role == "user":
            parts.append(f"{INPUT} {m.content}\n")
        else:
            parts.append(f"{OUTPUT}\n{m.content}\n\n")
    text = "".join(parts)
    return text + OUTPUT + "\n" if add_generation_prompt else text


def with_turn_stops(params: SamplingParams, template: str | None) -> SamplingParams:
    """`params` with the next-turn stops added when the model has no chat template
    (render_completion's layout); a template's own end of turn is its end-of-sequence token."""
    if template:
        return params
    from dataclasses import replace

    extra = tuple(s for s in COMPLETION_TURN_STOPS if s not in params.stop)
    return replace(params, stop=tuple(params.stop) + extra) if extra else params
