"""Scoring math (pure): option log-probabilities, sanity checks, distributions.

Exact method. The server echoes, for each prompt (context ids + option ids, see
``steps/server_prompt.py``), every prompt token's log-probability; an option's score is the
sum of its own tokens' log-probabilities (natural log): the log-probability that the reply
*starts with* the option, whatever follows it. A log-probability that is missing,
not finite or above 0 is impossible: the option is unscorable and the row fails with the
reason (:func:`checked_logprob`), never an 'ok' row with a broken number.

First-token method (a repaired variant of the seed's): look up each option's first token
in the top-k next-token log-probabilities after the context. An option whose first token
is shared with another option, or absent from the top-k, is reported as such and gets no
probability; the remaining options are normalised among themselves.

Seed-literal method (:func:`seed_literal_distribution`): the seed's arithmetic verbatim,
for reproduction only (each whole option looked up as one top-k key, -10 when missing).

Distributions are the softmax of the option scores; ``mass`` is the total unnormalised
probability the options carried (above 1 is impossible: the row fails). Entropies are in
bits (log base 2), as in the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


class Unscorable(ValueError):
    """An option or row cannot be scored from the server's answer; the message says why."""


class OptionIdsError(Unscorable):
    """The options have no token ids of their own after the context (a boundary merge, an empty option, options that are
    not prefix-free): a property of the model's tokenizer, reply prefix and the study's options, the same on every row."""


class MissingLogprobs(Unscorable):
    """The server's answer lacks the log-probabilities asked for (none echoed, too few, or null where one is needed)."""


def logsumexp(values: Sequence[float]) -> float:
    """log(sum(exp(values))), stable; -inf for an empty sequence."""
    if not values:
        return -math.inf
    peak = max(values)
    if peak == -math.inf:
        return -math.inf
    return peak + math.log(sum(math.exp(v - peak) for v in values))


MASS_TOLERANCE = 1e-6  # float rounding in a server's log-softmax; more than this above 1 is impossible


def checked_logprob(value: Any, what: str) -> float:
    """``value`` as a log-probability; Unscorable if it is missing, not finite or above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MissingLogprobs(f"{what} has no log-probability")
    if not math.isfinite(value) or value > 0:
        raise Unscorable(f"{what} has an impossible log-probability {value!r} (must be finite and <= 0)")
    return float(value)


def option_logprob(token_logprobs: Sequence[Any], start: int, end: int, what: str) -> float:
    """Sum of ``token_logprobs[start:end]`` (an option's tokens in an echoed prompt), each checked."""
    if start < 1 or end > len(token_logprobs) or start >= end:
        raise MissingLogprobs(f"the server echoed {len(token_logprobs)} log-probabilities; {what} needs positions {start}..{end - 1}")
    total = 0.0
    for value in token_logprobs[start:end]:
        if type(value) is not float or not -math.inf < value <= 0.0:  # the common case needs no message: build it only here
            value = checked_logprob(value, f"a token of {what}")
        total += value
    return total


@dataclass(frozen=True)
class Distribution:
    """A normalised distribution over labelled options."""

    probs: dict[str, float]
    mass: float  # total unnormalised probability of the options (exact method); nan for first-token
    problems: tuple[str, ...] = ()

    def entropy_bits(self) -> float:
        """Shannon entropy of the distribution, in bits."""
        return entropy_bits(list(self.probs.values()))


def softmax_distribution(scores: Mapping[str, float]) -> Distribution:
    """Normalise label log-scores (natural log) into a distribution and its mass."""
    total = logsumexp(list(scores.values()))
    if total == -math.inf:
        raise Unscorable("every option has probability zero")
    if total > math.log1p(MASS_TOLERANCE):
        raise Unscorable(f"the options carry a total probability of {math.exp(total):.6g} > 1 (impossible log-probabilities)")
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
    for key, value in top_logprobs.items():
        checked_logprob(value, f"the top-k token {key!r}")
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


SEED_MISSING_LOGPROB = -10.0  # the seed's value for an option not among the top-k


def seed_variants(option: str) -> list[str]:
    """The keys the seed tries for an option, in its order: as is, capitalized, lower case, with a leading space."""
    return [option, option.capitalize(), option.lower(), f" {option}"]


def seed_literal_distribution(top_logprobs: Mapping[str, float], options: Mapping[str, str]) -> Distribution:
    """The seed's ``extract_token_probabilities``, literally (seed 000, Study 1 extractor).

    ``options`` maps each label to the seed's target string ('70%', 'yes'). Each whole
    string is looked up as ONE top-k key (first of its :func:`seed_variants` found), else
    it gets -10; the softmax over all of them is returned. Not a probability of the
    option's text: a multi-token option ('70%' on most vocabularies) is never a key, so
    it always gets -10 (then every bin gets 1/11).
    """
    for key, value in top_logprobs.items():
        checked_logprob(value, f"the top-k token {key!r}")
    scores: dict[str, float] = {}
    for label, option in options.items():
        scores[label] = next((float(top_logprobs[k]) for k in seed_variants(option) if k in top_logprobs), SEED_MISSING_LOGPROB)
    values = np.exp(np.array(list(scores.values()), dtype=np.float64))
    probs = values / values.sum()
    missing = tuple(f"{label}: {option!r} not a top-{len(top_logprobs)} key (-10)" for label, option in options.items()
                    if not any(k in top_logprobs for k in seed_variants(option)))
    return Distribution({label: float(p) for label, p in zip(scores, probs)}, math.nan, missing)
