"""The transformers generation backend: a local Hugging Face folder, or a GGUF file that
transformers dequantises once into a cached folder. torch and transformers are imported only
when this backend loads."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from sgtui.errors import SgtuiError

from .base import ChatMessage, Completion, SamplingParams, TokenScore, check_score_pair
from .chat import render_template, with_turn_stops
from .training import hf_folder


def load_hf(
    model_path: str | Path, adapter: str | None = None, trust_remote_code: bool = False, dtype=None
):
    """(model, tokenizer) from a Hugging Face folder or a .gguf file, with clear errors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(model_path)
    if not p.exists():
        raise SgtuiError(
            "model not found",
            path=str(p),
            fix="pass --model with a .gguf file or a Hugging Face folder",
        )
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    if p.is_file():
        # dequantised once and kept, as for training (backends.training.hf_folder)
        src = str(hf_folder(p, trust_remote_code=trust_remote_code))
    else:
        if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
            raise SgtuiError(
                "this Hugging Face folder holds no weights (*.safetensors or *.bin)",
                path=str(p),
                fix="point --model at a folder with the model's weights",
            )
        src = str(p)
    try:
        tok = AutoTokenizer.from_pretrained(src, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            src, torch_dtype=dtype or torch.float32, **kwargs
        )
    except (OSError, ValueError, KeyError) as e:
        raise SgtuiError(
            f"transformers could not load the model ({str(e).splitlines()[0]})",
            path=str(p),
            fix="check that the folder or file is a complete model",
        )
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model, tok


class TransformersGenerator:
    name = "transformers"
    supports_batch = False
    supports_lora = True
    supports_score = True

    def __init__(
        self,
        model_path: str | Path,
        adapter: str | None = None,
        trust_remote_code: bool = False,
        **_: object,
    ):
        self.model_path = str(model_path)
        self.model, self.tok = load_hf(model_path, adapter, trust_remote_code)
        self.n_ctx = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    def render_chat(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        return render_template(
            self.tok.chat_template,
            messages,
            self.tok.bos_token or "",
            self.tok.eos_token or "",
            add_generation_prompt,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def eos_text(self) -> str:
        return self.tok.eos_token or ""

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> Iterator[Completion]:
        import torch

        params = with_turn_stops(params, self.tok.chat_template)
        for i, prompt in enumerate(prompts):
            ids = self.tok(prompt, return_tensors="pt", add_special_tokens=False)
            n_prompt = ids["input_ids"].shape[1]
            if n_prompt + 1 >= self.n_ctx:
                raise SgtuiError(
                    f"a prompt of {n_prompt} tokens does not fit the model's context "
                    f"of {self.n_ctx}",
                    path=self.model_path,
                    fix="shorten the task, or use a model with a longer context",
                )
            seed = seeds[i] if seeds is not None else (params.seed or 0) * 1000003 + i
            torch.manual_seed(seed)
            sample = params.temperature > 0
            gen_kwargs = dict(
                max_new_tokens=params.max_tokens,
                do_sample=sample,
                num_return_sequences=params.n,
                pad_token_id=self.tok.pad_token_id,
            )
            if sample:
                gen_kwargs.update(
                    temperature=params.temperature, top_k=params.top_k, top_p=params.top_p
                )
            with torch.no_grad():
                out = self.model.generate(**ids, **gen_kwargs)
            for j, seq in enumerate(out):
                new = seq[n_prompt:]
                eos = self.tok.eos_token_id
                n_tok = int((new != self.tok.pad_token_id).sum()) if eos is not None else len(new)
                text = self.tok.decode(new, skip_special_tokens=True)
                for stop in params.stop:
                    if stop in text:
                        text = text[: text.index(stop)]
                yield Completion(index=i, sample=j, text=text, n_tokens=n_tok)

    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[TokenScore]:
        """log P(continuation | prompt) per pair (backends.base.Generator.score): one forward
        pass per pair over the prompt's tokens (as generate() tokenises them) followed by the
        continuation's own, log-softmax in float64."""
        import torch

        if len(prompts) != len(continuations):
            raise ValueError("score() takes one continuation per prompt")
        device = next(self.model.parameters()).device
        out = []
        for prompt, text in zip(prompts, continuations):
            cont = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
            if not cont:
                out.append(TokenScore(0.0, 0))
                continue
            toks = self.tok(prompt, add_special_tokens=False)["input_ids"]
            if not toks and self.tok.bos_token_id is not None:
                toks = [self.tok.bos_token_id]  # the first continuation token needs a context
            check_score_pair(len(toks), len(cont), self.n_ctx, self.model_path)
            ids = torch.tensor([toks + cont], device=device)
            with torch.no_grad():
                logits = self.model(input_ids=ids).logits[0, len(toks) - 1 : -1].double()
            picked = torch.log_softmax(logits, dim=-1).gather(
                1, torch.tensor(cont, device=device)[:, None]
            )
            out.append(TokenScore(float(picked.sum()), len(cont)))
        return out

    def close(self) -> None:
        self.model = None
