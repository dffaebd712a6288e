"""Experiment 2 prompts as token ids from the model's own server: one source of truth for the template.

Experiment 1 sends chat messages to ``/v1/chat/completions``; the server renders them
with its chat template. Experiment 2 asks the SAME server for the same rendering, so both
experiments of a model always see the same prompt format, for any model, without a
hand-written template (vLLM and the embedded server both offer these endpoints):

1. ``POST /tokenize`` with the chat ``messages`` and ``add_generation_prompt: true``: the ids
   of the prompt up to the start of the reply, exactly as the chat endpoint builds them.
2. ``POST /detokenize`` of those ids: the prompt's text, special tokens written out.
3. ``POST /tokenize`` (text, no special tokens added) of that text + the model's
   ``reply_prefix`` (registry; e.g. DeepSeek-R1's empty think block): the context ids. They
   must start with the ids of step 1 (the tokenizer round-trips its own prompt), else the
   question is unscorable.
4. ``POST /tokenize`` of context text + each option: its ids must start with the context
   ids; the option is what follows. If they do not, the tokenizer merges the end of the
   context with the start of the option (a boundary merge): detected and reported, never
   guessed around.

The context ids are therefore identical across a question's options by construction, and
the option is located by ids, not by text offsets. A server without a chat template (a
base model on vLLM: its chat endpoint refuses too) or without ``/tokenize`` cannot be
scored: :func:`steps.probabilities.check_scoring_server` refuses it before any row.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from schemas.settings import ModelSpec
from steps.llm_client import LLMClient
from steps.scoring import Unscorable

TOKENIZE_PATH = "/tokenize"
DETOKENIZE_PATH = "/detokenize"


@dataclass(frozen=True)
class QuestionIds:
    """One question's context ids and, per option label, the ids of each surface form after it."""

    context: tuple[int, ...]
    options: dict[str, tuple[tuple[int, ...], ...]]

    def prompts(self) -> list[tuple[str, list[int]]]:
        """(label, context + form ids) for every surface form, in a fixed order."""
        return [(label, [*self.context, *ids]) for label, forms in self.options.items() for ids in forms]


def reply_prefix_rest(prompt_text: str, reply_prefix: str) -> str:
    """The part of ``reply_prefix`` the server's generation prompt does not already end with.

    A template whose generation prompt already opens the think block ('...<think>\\n') gets
    only the rest of '<think>\\n\\n</think>\\n\\n'; the prefix is never repeated.
    """
    for k in range(len(reply_prefix), 0, -1):
        if prompt_text.endswith(reply_prefix[:k]):
            return reply_prefix[k:]
    return reply_prefix


def _ids(body: Mapping[str, Any], what: str) -> list[int]:
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, int) for t in tokens):
        raise Unscorable(f"the server's /tokenize answer for {what} has no token ids")
    return tokens


async def tokenize_text(client: LLMClient, model: ModelSpec, text: str) -> list[int]:
    """Ids of ``text`` as the server tokenizes it, with no special tokens added (special-token text is parsed)."""
    body = (await client.post_json(TOKENIZE_PATH, {"model": model.request_model, "prompt": text, "add_special_tokens": False})).body
    return _ids(body, "a text")


async def chat_prompt(client: LLMClient, model: ModelSpec, messages: list[dict[str, str]]) -> tuple[list[int], str]:
    """Ids and text of ``messages`` rendered by the server's chat template up to the reply."""
    body = (await client.post_json(TOKENIZE_PATH, {
        "model": model.request_model, "messages": messages, "add_generation_prompt": True, "add_special_tokens": False})).body
    ids = _ids(body, "the chat messages")
    text = (await client.post_json(DETOKENIZE_PATH, {"model": model.request_model, "tokens": ids})).body.get("prompt")
    if not isinstance(text, str):
        raise Unscorable("the server's /detokenize answer has no prompt text")
    return ids, text


async def context_ids(client: LLMClient, model: ModelSpec, messages: list[dict[str, str]]) -> tuple[list[int], str]:
    """Ids and text of the scoring context: the server's chat prompt up to the reply, then the model's reply prefix.

    Raises :class:`Unscorable` when the tokenizer does not give back its own prompt's ids.
    """
    chat_ids, text = await chat_prompt(client, model, messages)
    context_text = text + reply_prefix_rest(text, model.reply_prefix)
    context = await tokenize_text(client, model, context_text)
    if context[: len(chat_ids)] != chat_ids:
        raise Unscorable("the server's tokenizer does not give back its own chat prompt's ids from the prompt's text "
                         "(/tokenize of /detokenize differs); the context cannot be located by ids")
    return context, context_text


async def question_ids(
    client: LLMClient, model: ModelSpec, messages: list[dict[str, str]], options: Mapping[str, Sequence[str]]
) -> QuestionIds:
    """The context ids of ``messages`` under the server's template and each option's ids after them.

    Raises :class:`Unscorable` when the tokenizer does not round-trip its own prompt or
    merges the context's end with an option's start.
    """
    context, context_text = await context_ids(client, model, messages)
    forms = [(label, form) for label, label_forms in options.items() for form in label_forms]
    full = await asyncio.gather(*(tokenize_text(client, model, context_text + form) for _, form in forms))
    per_label: dict[str, list[tuple[int, ...]]] = {label: [] for label in options}
    for (label, form), ids in zip(forms, full):
        if ids[: len(context)] != context:
            raise Unscorable(f"boundary merge: the server's tokenizer joins the end of the prompt with the start of the option "
                             f"{form!r} (the context's ids change when the option follows), so the option has no ids of its own")
        if len(ids) == len(context):
            raise Unscorable(f"the option {form!r} has no tokens after the context")
        per_label[label].append(tuple(ids[len(context):]))
    return QuestionIds(tuple(context), {label: tuple(seqs) for label, seqs in per_label.items()})


def minimum_prompt_tokens(question: QuestionIds) -> int:
    """Distinct token positions a question needs evaluated: its context once, each option-trie node once."""
    nodes = {tuple(ids[:i]) for forms in question.options.values() for ids in forms for i in range(1, len(ids) + 1)}
    return len(question.context) + len(nodes)
