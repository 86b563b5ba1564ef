"""Chat-template rendering shared by the backends: the model's own Jinja template in a sandbox,
or the paper's Vicuna layout when a model has none."""

from __future__ import annotations

from typing import Sequence

from .base import ChatMessage, SamplingParams

# where the next turn starts in the Vicuna layout: a base model, which has no end-of-turn token
# to stop at, runs on into "USER: [input] = ..." until the token limit without it. Not only
# after a newline: after the layout's "ASSISTANT:\n" a base model may open the next turn at
# once (Gemma 3 270M does), which is no answer at all and becomes an empty one
VICUNA_TURN_STOPS = ("\nUSER:", "USER:")  # the first cuts the newline before the turn too


def render_template(
    template: str | None,
    messages: Sequence[ChatMessage],
    bos: str = "",
    eos: str = "",
    add_generation_prompt: bool = True,
) -> str:
    msgs = [{"role": m.role, "content": m.content} for m in messages]
    if not template:
        return render_vicuna(messages, add_generation_prompt)
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str):
        raise ValueError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=msgs, bos_token=bos, eos_token=eos, add_generation_prompt=add_generation_prompt
    )


def render_vicuna(messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
    """The paper's Vicuna v1.1 layout (SELF_GUIDE.md section 5.1)."""
    lines = [""]
    for m in messages:
        if m.role == "system":
            lines.append(m.content)
        elif m.role == "user":
            lines.append(f"USER: {m.content}")
        else:
            lines.append(f"ASSISTANT: {m.content}")
    text = "\n".join(lines)
    return text + "\nASSISTANT:\n" if add_generation_prompt else text


def with_turn_stops(params: SamplingParams, template: str | None) -> SamplingParams:
    """`params` with the layout's next-turn stops added when the model has no chat template
    (render_vicuna's layout); a template's own end of turn is its end-of-sequence token."""
    if template:
        return params
    from dataclasses import replace

    extra = tuple(s for s in VICUNA_TURN_STOPS if s not in params.stop)
    return replace(params, stop=tuple(params.stop) + extra) if extra else params
