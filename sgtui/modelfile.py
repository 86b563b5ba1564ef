"""An Ollama Modelfile for a fine-tune, so `ollama create` gives a model that answers as the
evaluation measured it and stops where it should.

The export is a folder:
- `adapter.gguf`, the llama.cpp LoRA GGUF (export.export_gguf);
- `Modelfile`: FROM the base GGUF, ADAPTER ./adapter.gguf, a TEMPLATE, PARAMETER stop for the
  turn format's end-of-turn texts, and PARAMETER temperature 0 (the evaluation decodes greedily).

The TEMPLATE is the task's meta prompt (prompts.meta_messages: system, instruction, the task's
examples), rendered by the model's own chat template exactly as training and evaluation render
it, with Ollama's `{{ .Prompt }}` where the new input goes. So `ollama run NAME "some input"`
sends the model the very bytes it was trained on, whatever the template's family. A fine-tune
made by sgtui answers one task input per request; the template does not carry a chat history.

What the family decides is the stops: Ollama stops at the model's end-of-sequence token on its
own, but a template whose turn ends with another token (Llama 3's <|eot_id|>, Gemma's
<end_of_turn>, Phi-3's <|end|>) rambles on into a new turn without a stop for it (Ollama issues
#6823 and #8363). The known families are ChatML, Llama 3, Gemma, Mistral and Phi-3, and the
"Input: … Output:" completion layout sgtui uses for a model without a chat template. For another
template the stops are the end-of-sequence text alone, and the export says so. A prompt the
Modelfile syntax cannot hold (one containing three double quotes) is written without TEMPLATE,
and the export says that too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from backends.chat import COMPLETION_TURN_STOPS

from .errors import SgtuiError
from .prompts import meta_messages

MODELFILE = "Modelfile"
ADAPTER_GGUF = "adapter.gguf"
PROMPT = "{{ .Prompt }}"
# a text that no task contains, put where the new input goes and then replaced by PROMPT
_SLOT = "\x00sgtui-input\x00"

# family -> (a text of its template that names it, the texts that end an answer)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "llama3": ("<|start_header_id|>", ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>")),
    "chatml": ("<|im_start|>", ("<|im_end|>", "<|im_start|>")),
    "gemma": ("<start_of_turn>", ("<end_of_turn>", "<start_of_turn>")),
    "phi3": ("<|assistant|>", ("<|end|>", "<|user|>", "<|assistant|>")),
    "mistral": ("[INST]", ("[INST]", "[/INST]")),
}
# sgtui's own layout for a model without a chat template (backends/chat.py render_completion)
COMPLETION = ("completion", COMPLETION_TURN_STOPS)


@dataclass
class Modelfile:
    base: Path  # FROM
    adapter: str  # ADAPTER, relative to the Modelfile
    template: str | None  # TEMPLATE, with PROMPT where the input goes
    stops: list[str]
    family: str | None  # None: a template of no known family
    parameters: dict[str, str] = field(default_factory=lambda: {"temperature": "0"})
    notes: list[str] = field(default_factory=list)  # what the person should know

    def text(self) -> str:
        lines = [
            "# written by sgtui: the base model, the fine-tune's LoRA, and the task's prompt",
            f"FROM {_quoted_path(self.base)}",
            f"ADAPTER {self.adapter}",
        ]
        if self.template is not None:
            lines.append(f'TEMPLATE """{self.template}"""')
        for name, value in self.parameters.items():
            lines.append(f"PARAMETER {name} {value}")
        lines += [f"PARAMETER stop {_go_string(s)}" for s in self.stops]
        return "\n".join(lines) + "\n"


def family_of(template: str | None) -> tuple[str | None, tuple[str, ...]]:
    """(family name, its stops) from a chat template's text; (None, ()) for an unknown one."""
    if not template:
        return COMPLETION
    for name, (mark, stops) in FAMILIES.items():
        if mark in template:
            return name, stops
    return None, ()


def build(task, fmt, base: Path, adapter: str = ADAPTER_GGUF) -> Modelfile:
    """The Modelfile for `task` on a model whose chat format is `fmt` (training.ChatFormat)."""

    family, stops = family_of(fmt.template)
    notes: list[str] = []
    if family is None:
        notes.append(
            "the model's chat template is of no family sgtui knows (ChatML, Llama 3, "
            "Gemma, Mistral, Phi-3): the Modelfile stops only at the end-of-sequence "
            "token; add PARAMETER stop lines for its end of turn if answers run on"
        )
    all_stops = [s for s in dict.fromkeys([fmt.eos, *stops]) if s.strip()]
    try:
        rendered = fmt.render(meta_messages(task, _SLOT))
    except Exception as e:  # a template that refuses this conversation (raise_exception)
        rendered, why = None, f"the chat template refused the task's prompt ({e})"
    else:
        why = None
        if rendered.count(_SLOT) != 1:
            why = "the chat template did not keep the input as given"
        elif '"""' in rendered:
            why = 'the task\'s prompt contains """, which a Modelfile TEMPLATE cannot hold'
    template = None
    if why is None:
        # kept byte for byte, a bos text the template writes included: Ollama, like llama.cpp
        # here, reads special-token texts in a prompt as the tokens themselves
        before, after = rendered.split(_SLOT)
        template = _go_text(before) + PROMPT + _go_text(after)
    else:
        notes.append(
            f"written without a TEMPLATE: {why}; Ollama will use the base model's "
            "own, and answers will not match the evaluation"
        )
    return Modelfile(
        base=base.resolve(),
        adapter=f"./{adapter}",
        template=template,
        stops=all_stops,
        family=family,
        notes=notes,
    )


def prompt_for(template: str, text: str) -> str:
    """What Ollama sends the model for `text` with a TEMPLATE that build() wrote: the template's
    only action is PROMPT, and literal "{{" is written as an action that prints it."""
    return template.replace(PROMPT, "\x00").replace('{{ "{{" }}', "{{").replace("\x00", text)


def parse(text: str) -> dict[str, list[str]]:
    """A Modelfile's instructions: name (upper case) -> its arguments in order. Multi-line
    \"\"\"…\"\"\" values are joined; PARAMETER values are 'name value' strings."""
    out: dict[str, list[str]] = {}
    pos = 0
    line_re = re.compile(r'[ \t]*([A-Za-z]+)[ \t]+("""|")?', re.M)
    while pos < len(text):
        if text.startswith("#", pos) or text.startswith("\n", pos):
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end + 1
            continue
        m = line_re.match(text, pos)
        if not m:
            raise ValueError(f"not a Modelfile line at {text[pos : pos + 40]!r}")
        name, quote = m.group(1).upper(), m.group(2)
        start = m.end()
        if quote == '"""':
            end = text.index('"""', start)
            value, pos = text[start:end], end + 3
        else:
            end = text.find("\n", start)
            end = len(text) if end < 0 else end
            value, pos = (quote or "") + text[start:end], end
        out.setdefault(name, []).append(value)
    return out


def write(dest: Path, modelfile: Modelfile) -> Path:
    path = dest / MODELFILE
    path.write_text(modelfile.text(), encoding="utf-8")
    return path


def create_command(name: str, path: Path) -> str:
    return f"ollama create {name} -f {_quoted_path(path)}"


def model_name(task_name: str) -> str:
    """An Ollama model name from a task's name: lower case, [a-z0-9._-]."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", task_name.lower()).strip("-._")
    return f"sgtui-{slug or 'task'}"


def _go_text(text: str) -> str:
    """Literal text for a Go template: only "{{" starts an action."""
    return text.replace("{{", '{{ "{{" }}')


def _go_string(s: str) -> str:
    """A PARAMETER value in double quotes, as Ollama's parser reads it (JSON string escapes)."""
    import json

    return json.dumps(s, ensure_ascii=False)


def _quoted_path(p: Path) -> str:
    s = str(p)
    if any(c.isspace() for c in s) or '"' in s:
        if '"' in s:
            raise SgtuiError(
                "the base model's path contains a double quote, which a Modelfile cannot name",
                path=s,
                fix="move or rename the base GGUF",
            )
        return f'"{s}"'
    return s
