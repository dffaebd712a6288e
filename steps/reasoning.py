"""Reasoning traces (pure): which part of a chat reply is the model's trace, which its answer.

A trace reaches the pipeline one of two ways, recorded per row in ``trace_split``:

* ``server``: the server split it off itself. vLLM started with ``--reasoning-parser``
  (``deepseek_r1`` for the DeepSeek-R1 distills; the registry's ``reasoning_parser``) returns
  the trace in the message's ``reasoning`` field (vLLM >= 0.11.x; ``reasoning_content`` before,
  kept as an alias for a while) and only the answer in ``content`` (null when the trace never
  ended).
* ``think-tags``: the pipeline splits ``content`` at ``</think>``: the text before the last
  ``</think>`` is the trace (opening ``<think>`` tags dropped), the text after it the answer.
  This holds whether the model wrote ``<think>`` itself or the prompt opened the block (the
  DeepSeek-R1 distill's generation prompt ends ``<think>\\n``, so its reply holds only
  ``</think>``).

A reply whose trace never ended has **no answer** (``answer`` is None): for a model registered
``reasoning: true`` that is any reply without ``</think>``; for any model a ``<think>`` with
no ``</think>`` after it. Such a row fails with :func:`no_answer_reason` (cut off at
``max_tokens``: raise it); it is never coded as if the model had answered. A model that is not
a reasoning model and writes no tags has no trace (``trace_split`` None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SERVER_TRACE_FIELDS = ("reasoning", "reasoning_content")  # vLLM >= 0.11.x, then the earlier name

TraceSplit = Literal["server", "think-tags"]
_TAG = re.compile(r"</?think>")


@dataclass(frozen=True)
class SplitReply:
    """A chat reply split into answer and trace; ``answer`` None means the reply has no answer (the trace never ended)."""

    answer: Optional[str]
    trace: Optional[str]
    split: Optional[TraceSplit]


def _trace_text(text: str) -> Optional[str]:
    parts = [p.strip() for p in _TAG.split(text)]
    joined = "\n\n".join(p for p in parts if p)
    return joined or None


def split_think_tags(content: str, reasoning: bool) -> SplitReply:
    """Split ``content`` at its last ``</think>`` (see the module docstring); ``reasoning``: the model is registered as one."""
    end = content.rfind(THINK_CLOSE)
    if end < 0:
        if reasoning or THINK_OPEN in content:
            return SplitReply(None, _trace_text(content), "think-tags")
        return SplitReply(content.strip(), None, None)
    answer = content[end + len(THINK_CLOSE):]
    if THINK_OPEN in answer:  # another trace opened after the last one ended, and never ended
        return SplitReply(None, _trace_text(content), "think-tags")
    return SplitReply(answer.strip(), _trace_text(content[:end]), "think-tags")


def server_trace(message: Mapping[str, Any]) -> Optional[str]:
    """The trace the server split off (vLLM's ``reasoning`` / ``reasoning_content``), or None when it split nothing."""
    values = [message.get(name) for name in SERVER_TRACE_FIELDS]
    texts = [v for v in values if isinstance(v, str)]
    return next((t for t in texts if t.strip()), texts[0] if texts else None)


def split_reply(message: Mapping[str, Any], reasoning: bool) -> SplitReply:
    """Answer and trace of one chat ``message`` (``choices[0].message``): the server's split if it made one, else the tags'."""
    content = message.get("content") or ""
    trace = server_trace(message)
    if trace is None:
        return split_think_tags(content, reasoning)
    if THINK_CLOSE in content:  # a server that split a trace and still left tags in the answer: split those too
        rest = split_think_tags(content, reasoning=False)
        return SplitReply(rest.answer or None, _trace_text(f"{trace}\n\n{rest.trace or ''}"), "server")
    return SplitReply(content.strip() or None, trace.strip() or None, "server")


def no_answer_reason(reply: SplitReply, finish_reason: Optional[str], max_tokens: int) -> Optional[str]:
    """Why a reply has no usable answer (the row fails with it), or None when it has one."""
    if reply.answer:
        return None
    if reply.answer is None:
        if finish_reason == "length":
            return (f"no answer: the reasoning trace was cut off at max_tokens={max_tokens} before it ended (no {THINK_CLOSE}); "
                    "raise --max-tokens (or the model's max_tokens in the registry) and re-run")
        return (f"no answer: the reasoning trace never ended (no {THINK_CLOSE}; finish_reason {finish_reason!r}); "
                "the model stopped inside its trace")
    if finish_reason == "length":
        return f"empty answer: generation stopped at max_tokens={max_tokens}; raise --max-tokens"
    return "empty answer" + (f" after the reasoning trace (finish_reason {finish_reason!r})" if reply.trace else "")
