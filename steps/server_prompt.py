"""Experiment 2 contexts as token ids: the ids the model itself is conditioned on when it writes its answer.

Experiment 1 sends chat messages to ``/v1/chat/completions``; the server renders them with
its chat template. Experiment 2 asks the SAME server for the same rendering, so both
experiments of a model see the same prompt, for any model, without a hand-written template
(vLLM and the embedded server both offer these endpoints). A question's scoring context is
built at the token level, never by re-tokenizing joined text:

1. The prompt: ``POST /tokenize`` with the chat ``messages`` and ``add_generation_prompt:
   true`` gives the ids of the prompt up to the reply, exactly as the chat endpoint builds them.
2. The reply prefix's remainder: the registry's ``reply_prefix`` (DeepSeek-R1: an empty think
   block) minus what the generation prompt already ends with (found on the prompt's text,
   ``POST /detokenize``), tokenized ON ITS OWN (``POST /tokenize``, no special tokens added,
   special-token text parsed). A model writes its reply as new tokens after the prompt's last
   token, so those never merge with the prompt. DeepSeek-R1-Distill-Qwen: the prompt ends
   ``<｜Assistant｜><think>\\n`` = [151645, 151648, 198] and the remainder ``\\n</think>\\n\\n`` is
   [198, 151649, 271]; tokenizing the joined text instead gives [151645, 151648, 271, 151649,
   271], ids the model never sees (``\\n\\n`` is one token in Qwen's and Llama-3's BPE).
3. Each option: the reply text up to the option's end (remainder + option) tokenized on its
   own; its ids must start with the remainder's ids and the option is what follows. If they do
   not, the tokenizer merges the end of the reply prefix with the start of the option (a
   **boundary merge**): reported, never guessed around. With no remainder the option's ids are
   its own tokenization (an option cannot merge with the prompt: the model's reply starts a
   new token).

An option's score is then the probability of the reply *starting with* it (any continuation
after it counts). So the options must be prefix-free as token sequences: an option whose ids
begin another option's ids would count that option's mass twice; :func:`question_ids`
refuses it. The context ids are identical across a question's options by construction.
Reply ids repeat on every row (the same options after the same remainder), so
:class:`ReplyTokenizer` asks the server once per text. A server without a chat template (a
base model on vLLM) or without ``/tokenize`` cannot be scored:
:func:`steps.probabilities.check_scoring_server` refuses it before any row.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from typing import Any, Mapping, Optional, Sequence

from schemas.settings import ModelSpec
from steps.llm_client import LLMClient
from steps.scoring import OptionIdsError, Unscorable

TOKENIZE_PATH = "/tokenize"
DETOKENIZE_PATH = "/detokenize"


@dataclass(frozen=True)
class QuestionIds:
    """One question's context ids and, per option label, the ids of each surface form after it.

    ``context`` = the server's chat-prompt ids + the reply prefix's remainder ids
    (``remainder`` is that text, '' for most models).
    """

    context: tuple[int, ...]
    options: dict[str, tuple[tuple[int, ...], ...]]
    remainder: str = ""

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
    if not isinstance(tokens, list) or not tokens or not all(map(isinstance, tokens, repeat(int))):
        raise Unscorable(f"the server's /tokenize answer for {what} has no token ids")
    return tokens


async def tokenize_text(client: LLMClient, model: ModelSpec, text: str) -> list[int]:
    """Ids of ``text`` as the server tokenizes it, with no special tokens added (special-token text is parsed)."""
    body = (await client.post_json(TOKENIZE_PATH, {"model": model.request_model, "prompt": text, "add_special_tokens": False})).body
    return _ids(body, repr(text) if len(text) <= 40 else "a text")


async def chat_prompt_ids(client: LLMClient, model: ModelSpec, messages: list[dict[str, str]]) -> list[int]:
    """Ids of ``messages`` rendered by the server's chat template up to the reply (what the chat endpoint builds)."""
    body = (await client.post_json(TOKENIZE_PATH, {
        "model": model.request_model, "messages": messages, "add_generation_prompt": True, "add_special_tokens": False})).body
    return _ids(body, "the chat messages")


async def detokenize(client: LLMClient, model: ModelSpec, ids: Sequence[int]) -> str:
    """The text of ``ids`` as the server writes it (special tokens written out)."""
    text = (await client.post_json(DETOKENIZE_PATH, {"model": model.request_model, "tokens": list(ids)})).body.get("prompt")
    if not isinstance(text, str):
        raise Unscorable("the server's /detokenize answer has no prompt text")
    return text


async def chat_prompt(client: LLMClient, model: ModelSpec, messages: list[dict[str, str]]) -> tuple[list[int], str]:
    """Ids and text of ``messages`` rendered by the server's chat template up to the reply."""
    ids = await chat_prompt_ids(client, model, messages)
    return ids, await detokenize(client, model, ids)


class ReplyTokenizer:
    """Ids of reply texts as the model writes them (each text tokenized on its own), asked of the server once per text.

    One per model and step: a study's options follow the same reply-prefix remainder on
    every row, so their ids are the same for every row.
    """

    def __init__(self, client: LLMClient, model: ModelSpec):
        self.client, self.model = client, model
        self._known: dict[str, asyncio.Task[list[int]]] = {}

    def known(self, text: str) -> Optional[tuple[int, ...]]:
        """The ids of ``text`` if the server has already given them, else None (no request is made)."""
        if not text:
            return ()
        task = self._known.get(text)
        if task is not None and task.done() and not task.cancelled() and task.exception() is None:
            return tuple(task.result())
        return None

    async def ids(self, text: str) -> tuple[int, ...]:
        """The server's ids of ``text`` alone ('' has none). A failed request is not remembered."""
        known = self.known(text)
        if known is not None:
            return known  # no new task: every row asks again for every option
        task = self._known.get(text)
        if task is None or task.done():
            task = self._known[text] = asyncio.create_task(tokenize_text(self.client, self.model, text))
        return tuple(await asyncio.shield(task))


async def context_ids(
    client: LLMClient, model: ModelSpec, messages: list[dict[str, str]], replies: Optional[ReplyTokenizer] = None
) -> tuple[list[int], str]:
    """The scoring context's ids (chat-prompt ids, then the reply prefix's remainder ids) and the remainder's text."""
    replies = replies or ReplyTokenizer(client, model)
    prompt = await chat_prompt_ids(client, model, messages)
    if not model.reply_prefix:
        return prompt, ""
    remainder = reply_prefix_rest(await detokenize(client, model, prompt), model.reply_prefix)
    return [*prompt, *await replies.ids(remainder)], remainder


async def option_ids(replies: ReplyTokenizer, remainder: str, form: str) -> tuple[int, ...]:
    """Ids of option ``form`` as the reply's continuation after ``remainder`` (see the module docstring).

    Raises :class:`Unscorable` on a boundary merge or an option without tokens of its own.
    """
    return split_option(await replies.ids(remainder), await replies.ids(remainder + form), remainder, form)


def split_option(before: tuple[int, ...], whole: tuple[int, ...], remainder: str, form: str) -> tuple[int, ...]:
    """The option's own ids: ``whole`` (ids of remainder + form) after ``before`` (ids of the remainder); see :func:`option_ids`."""
    if whole[: len(before)] != before:
        raise OptionIdsError(f"boundary merge: the server's tokenizer joins the end of the reply prefix {remainder!r} with the start "
                         f"of the option {form!r} (the prefix's ids change when the option follows), so the option has no ids "
                         "of its own; change the model's reply_prefix in the registry or the option's surface form")
    if len(whole) == len(before):
        raise OptionIdsError(f"the option {form!r} has no tokens after the context")
    return whole[len(before):]


def _split_or_error(before, whole, remainder: str, form: str) -> Any:
    try:
        return split_option(before, whole, remainder, form)
    except OptionIdsError as exc:
        return exc


def overlapping_options(options: Mapping[str, Sequence[tuple[int, ...]]]) -> Optional[str]:
    """Why the options are not prefix-free as token sequences (a form's ids begin another's), or None.

    Each option is scored as the reply *starting with* it: if one form's ids begin another's,
    the first form's probability already contains the second's, and the distribution would
    count that mass twice.
    """
    return _overlap(tuple((label, tuple(seqs)) for label, seqs in options.items()))


@lru_cache(maxsize=256)
def _overlap(options: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]) -> Optional[str]:
    """:func:`overlapping_options` of a hashable copy (every row of a question has the same option ids: checked once)."""
    forms = [(label, index, ids) for label, seqs in options for index, ids in enumerate(seqs)]
    for label, index, ids in forms:
        for other, other_index, other_ids in forms:
            if (label, index) != (other, other_index) and other_ids[: len(ids)] == ids:
                same = "are the same ids" if len(ids) == len(other_ids) else "begin the ids of"
                return (f"the ids of option {label!r} (form {index + 1}) {same} option {other!r} (form {other_index + 1}): "
                        "a reply starting with the longer one also starts with the shorter, so the options are not exclusive")
    return None


async def question_ids(
    client: LLMClient, model: ModelSpec, messages: list[dict[str, str]], options: Mapping[str, Sequence[str]],
    replies: Optional[ReplyTokenizer] = None,
) -> QuestionIds:
    """The context ids of ``messages`` under the server's template and each option's ids after them.

    Raises :class:`Unscorable` on a boundary merge between the reply prefix and an option, or
    options that are not prefix-free (:func:`overlapping_options`).
    """
    replies = replies or ReplyTokenizer(client, model)
    context, remainder = await context_ids(client, model, messages, replies)
    forms = [(label, form) for label, label_forms in options.items() for form in label_forms]
    before, wholes = replies.known(remainder), [replies.known(remainder + form) for _, form in forms]
    found: list[Any]
    if before is not None and all(whole is not None for whole in wholes):  # every row after the first: no task per option
        found = [_split_or_error(before, whole, remainder, form) for (_, form), whole in zip(forms, wholes)]
    else:
        found = await asyncio.gather(*(option_ids(replies, remainder, form) for _, form in forms), return_exceptions=True)
    per_label: dict[str, list[tuple[int, ...]]] = {label: [] for label in options}
    for (label, _), ids in zip(forms, found):
        if isinstance(ids, BaseException):
            raise ids  # the first failing option in the study's order, whichever answer came first
        per_label[label].append(ids)
    result = {label: tuple(seqs) for label, seqs in per_label.items()}
    overlap = overlapping_options(result)
    if overlap:
        raise OptionIdsError(overlap)
    return QuestionIds(tuple(context), result, remainder)


def minimum_prompt_tokens(question: QuestionIds) -> int:
    """Distinct token positions a question needs evaluated: its context once, each option-trie node once."""
    nodes = {tuple(ids[:i]) for forms in question.options.values() for ids in forms for i in range(1, len(ids) + 1)}
    return len(question.context) + len(nodes)
