"""The part of an echoed ``/v1/completions`` reply that exact scoring reads, decoded without the rest.

An echo reply carries, for every prompt token, its text, log-probability, text offset and (on
vLLM) a ``top_logprobs`` object: about 120 kB and 1,200 positions per Study 2 question. Exact
scoring reads only ``choices[].index`` and ``choices[].logprobs.token_logprobs``.
:func:`decode_echo` decodes just those with msgspec's typed decoder, which skips the other
fields without building them (measured on a vLLM-shaped reply of 123 kB: 113 µs, against 277 µs
for orjson building the whole body; ``benchmarks/runner_throughput.py`` shows the stage).
A reply that does not have that shape (a field missing or of another type, a ``NaN`` literal,
not JSON) gives None: the caller parses the whole body as usual, and its checks name the problem.
"""

from __future__ import annotations

from typing import Any, Optional

import msgspec


class _EchoLogprobs(msgspec.Struct):
    token_logprobs: Optional[list[Any]] = None


class _EchoChoice(msgspec.Struct):
    index: int = 0
    logprobs: Optional[_EchoLogprobs] = None


class _EchoReply(msgspec.Struct):
    choices: list[_EchoChoice]


_DECODER = msgspec.json.Decoder(_EchoReply)


def decode_echo(body: bytes) -> Optional[dict[str, Any]]:
    """``{"choices": [{"index", "logprobs": {"token_logprobs"} or None}]}`` of an echo reply, or None if it has another shape."""
    try:
        reply = _DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return {"choices": [{"index": choice.index,
                         "logprobs": None if choice.logprobs is None else {"token_logprobs": choice.logprobs.token_logprobs}}
                        for choice in reply.choices]}
