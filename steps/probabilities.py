"""Experiment 2: the model's probability distribution over each question's answer options.

Pure halves: :func:`scoring_prompt` (what is sent), :func:`summarize_study1` /
:func:`summarize_study2` (distributions -> the seed's columns). :func:`run_probability_step`
drives them through the shared client with checkpoints, like Experiment 1.

Per row and question instance, one ``/v1/completions`` request carries every option's
prompt as a list (vLLM scores them in one round trip; the embedded server computes logits
only from where the prompts start to differ). A row that cannot be scored completely is 'failed' with the
reason: no probability is ever filled in for an option the engine did not score.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Callable

import pandas as pd

from schemas.probabilities import ASSESSMENTS, FRAMES, PERCENT_BINS, STATES, ScoringMethod
from schemas.settings import ModelSpec
from steps.chat_templates import render_chat_prompt
from steps.checkpoint import Checkpoint
from steps.errors import ServerError
from steps.llm_client import LLMClient, RequestFailed
from steps.retry import RetryPolicy, backoff_delay
from steps.outcome import NoProgress, RowProgress, StepOutcome, run_resumable
from steps.prompts import render_messages
from steps.scoring import (
    Distribution, Unscorable, continuation_logprob, entropy_bits, first_token_distribution, logsumexp, mean_std,
    softmax_distribution,
)
from steps.studies import ProbabilityQuestion, StudySpec

COMPLETIONS_PATH = "/v1/completions"
FIRST_TOKEN_TOP_K = 20  # vLLM's default --max-logprobs
DEFAULT_MIN_OPTION_MASS = 0.05


def scoring_prompt(
    question: ProbabilityQuestion, spec: StudySpec, row: dict[str, Any], extra: dict[str, Any], model: ModelSpec
) -> tuple[str, dict[str, list[str]]]:
    """The context text and, per option label, the continuations to score after it.

    Chat models: the context is the chat template up to the assistant's reply and the
    continuation is the option itself. Base models: the context ends with the
    question's answer prefix and the continuation is ' ' + option (the space belongs to
    the continuation, as in lm-evaluation-harness).
    """
    messages = render_messages(question.template, spec, {**row, **extra}, system_role=model.system_role)
    if model.chat_template:
        context, lead = render_chat_prompt(messages, model.chat_template), ""
    else:
        user = messages[-1]["content"]
        context = f"{user}\n{question.answer_prefix}" if question.answer_prefix else user
        lead = " "
    return context, {label: [lead + form for form in forms] for label, forms in question.options.items()}


async def _score_exact(client: LLMClient, model: ModelSpec, context: str, options: dict[str, list[str]]) -> Distribution:
    pairs = [(label, c) for label, conts in options.items() for c in conts]
    payload = {"model": model.request_model, "prompt": [context + c for _, c in pairs], "max_tokens": 1,
               "temperature": 0.0, "echo": True, "logprobs": 1}
    body = (await client.post_json(COMPLETIONS_PATH, payload)).body
    choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != len(pairs):
        raise Unscorable(f"sent {len(pairs)} prompts, the server answered {len(choices)} choices")
    per_label: dict[str, list[float]] = {}
    for (label, continuation), choice in zip(pairs, choices):
        score, _ = continuation_logprob(choice.get("logprobs") or {}, continuation)
        per_label.setdefault(label, []).append(score)
    return softmax_distribution({label: logsumexp(scores) for label, scores in per_label.items()})


async def _score_first_token(client: LLMClient, model: ModelSpec, context: str, options: dict[str, list[str]]) -> Distribution:
    payload = {"model": model.request_model, "prompt": context, "max_tokens": 1, "temperature": 0.0, "logprobs": FIRST_TOKEN_TOP_K}
    body = (await client.post_json(COMPLETIONS_PATH, payload)).body
    try:
        top = body["choices"][0]["logprobs"]["top_logprobs"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise Unscorable("the server's answer has no top_logprobs for the first generated token") from exc
    return first_token_distribution(top, options)


def summarize_study1(d: dict[str, Distribution]) -> dict[str, Any]:
    """The seed's §3 columns from the 'state0'..'state3' and 'knowledge' distributions."""
    out: dict[str, Any] = {}
    for k in STATES:
        for p in PERCENT_BINS:
            out[f"state{k}_prob_{p}"] = d[f"state{k}"].probs[str(p)]
    for k in STATES:  # seed order: all probabilities, then the summaries
        probs = [0.0 if math.isnan(v) else v for v in (out[f"state{k}_prob_{p}"] for p in PERCENT_BINS)]
        out[f"state{k}_mean"], out[f"state{k}_std"] = mean_std(probs, PERCENT_BINS)
        out[f"state{k}_entropy"] = d[f"state{k}"].entropy_bits()
        out[f"state{k}_option_mass"] = d[f"state{k}"].mass
    out["prob_knowledge_yes"] = d["knowledge"].probs["yes"]
    out["prob_knowledge_no"] = d["knowledge"].probs["no"]
    out["entropy_knowledge"] = d["knowledge"].entropy_bits()
    out["knowledge_option_mass"] = d["knowledge"].mass
    return out


def summarize_study2(d: dict[str, Distribution]) -> dict[str, Any]:
    """The seed's §6 columns: joint over the 8 utterances and marginals derived from it."""
    joint = d["utterance"].probs
    out: dict[str, Any] = {}
    frame = {f: sum(joint[f"{f}_{a}"] for a in ASSESSMENTS) for f in FRAMES}
    assessment = {a: sum(joint[f"{f}_{a}"] for f in FRAMES) for a in ASSESSMENTS}
    out["prob_was"], out["prob_wasnt"] = frame["was"], frame["wasnt"]
    for a in ASSESSMENTS:
        out[f"prob_{a}"] = assessment[a]
    for f in FRAMES:
        for a in ASSESSMENTS:
            out[f"prob_{f}_{a}"] = joint[f"{f}_{a}"]
    out["entropy_frame"] = _bits(frame.values())
    out["entropy_assessment"] = _bits(assessment.values())
    out["entropy_joint"] = d["utterance"].entropy_bits()
    out["option_mass"] = d["utterance"].mass
    return out


def _bits(values) -> float:
    """Entropy in bits of a marginal; NaN if a component is unknown (first-token method)."""
    values = list(values)
    return math.nan if any(math.isnan(v) for v in values) else entropy_bits(values)


SUMMARIES: dict[str, Callable[[dict[str, Distribution]], dict[str, Any]]] = {
    "study1_states": summarize_study1,
    "study2_utterances": summarize_study2,
}


SMOKE_CONTEXT = "The capital of France is"
SMOKE_CONTINUATION = " Paris"


SMOKE_POLICY = RetryPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=2.0)


async def check_prompt_logprobs(client: LLMClient, model: ModelSpec, policy: RetryPolicy = SMOKE_POLICY) -> None:
    """Fail fast unless the server echoes prompt-token log-probabilities.

    A server that returns only generated-token logprobs would make every option look
    equally (un)likely; this sends one known prompt and checks the echo. The check is a
    request like any other: the client retries HTTP and connection failures, and a reply
    that is malformed (no ``choices[0].logprobs``, an impossible value) is asked again up to
    ``policy.max_attempts`` times. The error says what happened: the server did not answer,
    it answered malformed replies, or (only when every well-formed reply lacked them) it
    does not return prompt-token log-probabilities.
    """
    payload = {"model": model.request_model, "prompt": [SMOKE_CONTEXT + SMOKE_CONTINUATION], "max_tokens": 1,
               "temperature": 0.0, "echo": True, "logprobs": 1}
    missing, malformed = [], []
    for attempt in range(1, policy.max_attempts + 1):
        try:
            body = (await client.post_json(COMPLETIONS_PATH, payload)).body
        except RequestFailed as exc:
            raise ServerError(f"the server for {model.name!r} did not answer the log-probability check "
                              f"(/v1/completions with echo: true, logprobs: 1): {exc.reason}") from exc
        try:
            logprobs = body["choices"][0]["logprobs"]
            if not isinstance(logprobs, dict):
                raise TypeError("choices[0].logprobs is not an object")
        except (KeyError, IndexError, TypeError) as exc:
            malformed.append(f"malformed reply ({exc or type(exc).__name__})")
        else:
            try:
                score, n_tokens = continuation_logprob(logprobs, SMOKE_CONTINUATION)
            except Unscorable as exc:
                missing.append(str(exc))
            else:
                if math.isfinite(score) and score < 0 and n_tokens >= 1:
                    return
                malformed.append(f"an impossible log-probability {score} for a known continuation")
        delay = backoff_delay(attempt, policy)
        if delay is not None:
            await asyncio.sleep(delay)
    if missing and not malformed:
        raise ServerError(
            f"the server for {model.name!r} does not return prompt-token log-probabilities with echo "
            f"(/v1/completions with echo: true, logprobs: 1; {len(missing)} well-formed replies without them: {missing[-1]}). "
            "Exact scoring needs them; vLLM and the embedded server support them.")
    raise ServerError(f"the server for {model.name!r} answered the log-probability check {policy.max_attempts} times without "
                      f"a usable reply: {'; '.join(dict.fromkeys(malformed + missing))}")


async def score_row(
    row: dict[str, Any], spec: StudySpec, model: ModelSpec, client: LLMClient, method: ScoringMethod
) -> dict[str, Distribution]:
    """Every question instance of ``row`` scored concurrently; raises Unscorable/RequestFailed."""
    score = _score_exact if method == "exact" else _score_first_token
    jobs: list[tuple[str, Any]] = []
    for question in spec.probability_questions:
        for instance, extra in question.instances():
            context, options = scoring_prompt(question, spec, row, extra, model)
            jobs.append((instance, score(client, model, context, options)))
    results = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)
    for (instance, _), result in zip(jobs, results):
        if isinstance(result, Unscorable):
            raise Unscorable(f"{instance}: {result}") from result
        if isinstance(result, RequestFailed):
            raise RequestFailed(f"{instance}: {result.reason}", result.attempts, result.status_code) from result
        if isinstance(result, BaseException):
            raise result
    return {instance: result for (instance, _), result in zip(jobs, results)}


def probability_record(
    row_index: int, row: dict[str, Any], spec: StudySpec, model: ModelSpec, run_id: str, method: ScoringMethod,
    min_option_mass: float, distributions: dict[str, Distribution] | None = None, error: str | None = None,
) -> dict[str, Any]:
    """One output row: the seed's columns from the distributions, or a failed row with its error."""
    record = {**row, "model_name": model.name, "run_id": run_id, "row_index": row_index, "replication": 0,
              "model_id": model.request_model, "scoring_method": method, "template_hash": spec.probability_hash}
    if distributions is None:
        return {**record, "status": "failed", "error": error}
    masses = [d.mass for d in distributions.values()]
    problems = [f"{name}: {p}" for name, d in distributions.items() for p in d.problems]
    return {
        **record, **SUMMARIES[spec.probability_summary](distributions),
        "low_option_mass": None if method != "exact" else any(m < min_option_mass for m in masses),
        "first_token_problems": "; ".join(problems) or None,
        "status": "ok", "error": None,
    }


async def run_probability_step(
    inputs: pd.DataFrame, spec: StudySpec, model: ModelSpec, client: LLMClient, checkpoint: Checkpoint, run_id: str,
    method: ScoringMethod = "exact", min_option_mass: float = DEFAULT_MIN_OPTION_MASS, progress: RowProgress = NoProgress(),
) -> StepOutcome:
    """Score every row not already 'ok' in ``checkpoint``; return the full table (seed columns first)."""
    if method == "exact":
        await check_prompt_logprobs(client, model)
    rows = inputs.to_dict(orient="records")

    async def work(index: int) -> dict[str, Any]:
        try:
            distributions = await score_row(rows[index], spec, model, client, method)
        except (Unscorable, RequestFailed) as exc:
            reason = exc.reason if isinstance(exc, RequestFailed) else str(exc)
            return probability_record(index, rows[index], spec, model, run_id, method, min_option_mass, error=reason)
        return probability_record(index, rows[index], spec, model, run_id, method, min_option_mass, distributions)

    # each row already sends several requests at once: keep about `concurrency` requests in flight
    window = max(1, client.concurrency // max(1, sum(len(q.instances()) for q in spec.probability_questions)))
    return await run_resumable(range(len(rows)), item_key=lambda i: (i, 0), is_done=lambda i, r: r.get("status") == "ok",
                               work=work, window=window, checkpoint=checkpoint, progress=progress, base=lambda i: rows[i])
