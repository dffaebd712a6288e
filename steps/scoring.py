"""Scoring math (pure): option log-probabilities from echoed prompt logprobs, distributions.

Exact method. Each option is sent as ``context + continuation``; the server echoes every
prompt token with its log-probability and character offset, plus one generated token
(``max_tokens: 1``), whose offset is the length of the prompt text *as the server
reconstructed it*. The continuation's tokens are those from ``that length -
len(continuation)`` on, so any BOS text the server prepends does not shift them. The
continuation must start on a token boundary and the tokens must spell it exactly,
otherwise the option is unscorable (never guessed). Its score is the sum of its token
log-probabilities (natural log).

First-token method (the seed's, kept for comparison): look up each option's first token
in the top-k next-token log-probabilities after the context. An option whose first token
is shared with another option, or absent from the top-k, is reported as such and gets no
probability; the remaining options are normalised among themselves.

Distributions are the softmax of the option scores; ``mass`` is the total unnormalised
probability the options carried. Entropies are in bits (log base 2), as in the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


class Unscorable(ValueError):
    """An option or row cannot be scored from the server's answer; the message says why."""


def logsumexp(values: Sequence[float]) -> float:
    """log(sum(exp(values))), stable; -inf for an empty sequence."""
    if not values:
        return -math.inf
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def continuation_logprob(logprobs: Mapping[str, Any], continuation: str, generated_tokens: int = 1) -> tuple[float, int]:
    """Sum of the log-probabilities of ``continuation``'s tokens, and their number.

    ``logprobs`` is an echoed ``choices[i].logprobs`` (``tokens``, ``token_logprobs``,
    ``text_offset``) whose last ``generated_tokens`` entries were generated.
    """
    try:
        tokens = list(logprobs["tokens"])
        values = list(logprobs["token_logprobs"])
        offsets = list(logprobs["text_offset"])
    except (KeyError, TypeError) as exc:
        raise Unscorable("the server's answer has no tokens/token_logprobs/text_offset (echo logprobs missing)") from exc
    if not (len(tokens) == len(values) == len(offsets)) or len(tokens) <= generated_tokens:
        raise Unscorable("echoed logprobs are inconsistent (lists of different lengths, or no prompt tokens)")
    prompt_end = offsets[len(tokens) - generated_tokens]
    boundary = prompt_end - len(continuation)
    indices = [i for i in range(len(tokens) - generated_tokens) if offsets[i] >= boundary]
    if not indices or offsets[indices[0]] != boundary:
        raise Unscorable(f"the continuation {continuation!r} does not start on a token boundary")
    spelled = "".join(tokens[i] for i in indices)
    if spelled != continuation:
        raise Unscorable(f"the echoed tokens spell {spelled!r}, not the continuation {continuation!r}")
    picked = [values[i] for i in indices]
    if any(v is None or not math.isfinite(v) for v in picked):
        raise Unscorable(f"a token of {continuation!r} has no log-probability")
    return float(sum(picked)), len(indices)


@dataclass(frozen=True)
class Distribution:
    """A normalised distribution over labelled options."""

    probs: dict[str, float]
    mass: float  # total unnormalised probability of the options (exact method); nan for first-token
    problems: tuple[str, ...] = ()

    def entropy_bits(self) -> float:
        return entropy_bits(list(self.probs.values()))


def softmax_distribution(scores: Mapping[str, float]) -> Distribution:
    """Normalise label log-scores (natural log) into a distribution and its mass."""
    total = logsumexp(list(scores.values()))
    if total == -math.inf:
        raise Unscorable("every option has probability zero")
    return Distribution({k: math.exp(v - total) for k, v in scores.items()}, math.exp(total))


def entropy_bits(probs: Sequence[float]) -> float:
    """Shannon entropy in bits; 0 log 0 = 0; NaN entries are ignored."""
    p = np.asarray([x for x in probs if not math.isnan(x)], dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mean_std(probs: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation of ``values`` under ``probs``."""
    p, v = np.asarray(probs, dtype=np.float64), np.asarray(values, dtype=np.float64)
    mean = float((p * v).sum())
    return mean, float(math.sqrt(max(0.0, (p * (v - mean) ** 2).sum())))


def first_token_distribution(top_logprobs: Mapping[str, float], continuations: Mapping[str, Sequence[str]]) -> Distribution:
    """The seed's first-token method, reported honestly (see the module docstring).

    ``continuations`` maps each label to its surface forms as they would follow the
    context (with any leading space). A form's first token is the longest top-k token
    that is a prefix of it.
    """
    first: dict[str, set[str]] = {}
    problems: list[str] = []
    for label, forms in continuations.items():
        keys = set()
        for form in forms:
            matches = [t for t in top_logprobs if t and form.startswith(t)]
            if matches:
                keys.add(max(matches, key=len))
        if not keys:
            problems.append(f"{label}: first token not in the top {len(top_logprobs)}")
        first[label] = keys
    owners: dict[str, list[str]] = {}
    for label, keys in first.items():
        for key in keys:
            owners.setdefault(key, []).append(label)
    for key, labels in owners.items():
        if len(labels) > 1:
            problems.append(f"{', '.join(labels)} share the first token {key!r}")
    scores: dict[str, float] = {}
    for label, keys in first.items():
        if keys and all(len(owners[k]) == 1 for k in keys):
            scores[label] = logsumexp([top_logprobs[k] for k in keys])
    if not scores:
        raise Unscorable("first-token method: no option has a first token of its own in the top-k; " + "; ".join(problems))
    found = softmax_distribution(scores)
    probs = {label: found.probs.get(label, math.nan) for label in continuations}
    return Distribution(probs, math.nan, tuple(problems))
