"""Render chat messages as the prompt text a model sees, up to the start of its reply (pure).

Used to score an option as the assistant's reply through ``/v1/completions``. The
strings follow the models' published chat templates (``tokenizer_config.json``);
the BOS token is left out because servers add it when they tokenize a prompt.

* ``gemma`` (Gemma 2/3 instruct): no system role (fold it into the user turn first).
* ``llama3`` (Llama 3.1 instruct): the template's default system header with dates.
* ``deepseek_r1`` (R1 distills): the reply starts after an empty think block, so an
  option is scored as the final answer rather than as the first words of a trace.
* ``None``: a base model; the caller scores a raw completion instead.
"""

from __future__ import annotations

from typing import Optional

CHAT_TEMPLATES = ("gemma", "llama3", "deepseek_r1")
LLAMA3_SYSTEM_HEADER = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


def _gemma(messages: list[dict[str, str]]) -> str:
    out = []
    for m in messages:
        if m["role"] == "system":
            raise ValueError("the gemma chat template has no system role; fold the system text into the user message")
        role = "model" if m["role"] == "assistant" else m["role"]
        out.append(f"<start_of_turn>{role}\n{m['content'].strip()}<end_of_turn>\n")
    return "".join(out) + "<start_of_turn>model\n"


def _llama3(messages: list[dict[str, str]]) -> str:
    system = next((m["content"].strip() for m in messages if m["role"] == "system"), "")
    out = [f"<|start_header_id|>system<|end_header_id|>\n\n{LLAMA3_SYSTEM_HEADER}{system}<|eot_id|>"]
    for m in messages:
        if m["role"] != "system":
            out.append(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>")
    return "".join(out) + "<|start_header_id|>assistant<|end_header_id|>\n\n"


def _deepseek_r1(messages: list[dict[str, str]]) -> str:
    system = "".join(m["content"] for m in messages if m["role"] == "system")
    out = [system]
    for m in messages:
        if m["role"] == "user":
            out.append(f"<｜User｜>{m['content']}")
        elif m["role"] == "assistant":
            out.append(f"<｜Assistant｜>{m['content']}<｜end▁of▁sentence｜>")
    return "".join(out) + "<｜Assistant｜><think>\n\n</think>\n\n"


def render_chat_prompt(messages: list[dict[str, str]], template: Optional[str]) -> str:
    """The prompt text for ``messages`` under ``template``, ending where the reply begins."""
    renderers = {"gemma": _gemma, "llama3": _llama3, "deepseek_r1": _deepseek_r1}
    if template not in renderers:
        raise ValueError(f"unknown chat template {template!r}; known: {', '.join(CHAT_TEMPLATES)}")
    return renderers[template](messages)
