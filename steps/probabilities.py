"""Experiment 2: the model's probability distribution over each question's answer options.

Methods (``--scoring``):

* ``exact`` (default): the log-probability that the model's reply *starts with* each option
  (the sum of the option's own token log-probabilities, whatever would follow), under the
  template its SERVER uses for Experiment 1, in the token-level context the model itself
  sees (``steps/server_prompt.py``); one ``/v1/completions`` request per question instance
  with every option as a token-id prompt (echo + logprobs). Context ids are identical across
  the options by construction; the embedded server evaluates the context once and each
  option as a continuation of it.
* ``first-token``: a repaired variant of the seed's method (longest top-20 prefix,
  collisions reported), on the same server-rendered context.
* ``seed-literal``: the seed's Study 1 method verbatim, for reproduction only: its own
  prompt wording as a raw completion (no chat template), each whole option looked up as
  one top-k key with its case/space variants, -10 for a missing one.

First-token methods cannot tell options apart that start with the same word (Study 2: all
start with 'It'): :func:`check_scoring_method` refuses such a study before any request.
:func:`check_scoring_server` scores one real question of each kind before the first row, so
a server or tokenizer that cannot score the study stops the step with the cause.
A row that cannot be scored completely, or whose server returned an impossible number
(log-probability not finite or > 0, options carrying more than all the mass), is 'failed'
with the reason: no probability is ever filled in for an option the engine did not score.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable, Optional

import pandas as pd

from schemas.probabilities import ASSESSMENTS, FRAMES, PERCENT_BINS, STATES, ScoringMethod
from schemas.settings import ModelSpec
from steps.checkpoint import Checkpoint
from steps.echo_reply import decode_echo
from steps.errors import ConfigError, ServerError
from steps.llm_client import LLMClient, RequestFailed
from steps.outcome import NoProgress, RowProgress, StepOutcome, run_resumable
from steps.prompts import render_messages
from steps.retry import RetryPolicy, backoff_delay
from steps.scoring import (
    Distribution,
    MissingLogprobs,
    OptionIdsError,
    Unscorable,
    entropy_bits,
    first_token_distribution,
    logsumexp,
    mean_std,
    option_logprob,
    seed_literal_distribution,
    softmax_distribution,
)
from steps.server_prompt import QuestionIds, ReplyTokenizer, context_ids, question_ids
from steps.studies import ProbabilityQuestion, StudySpec

COMPLETIONS_PATH = "/v1/completions"
FIRST_TOKEN_TOP_K = 20  # vLLM's default --max-logprobs
DEFAULT_MIN_OPTION_MASS = 0.05
FIRST_TOKEN_METHODS = ("first-token", "seed-literal")


def scoring_messages(
    question: ProbabilityQuestion, spec: StudySpec, row: dict[str, Any], extra: dict[str, Any], model: ModelSpec
) -> list[dict[str, str]]:
    """The chat messages of one question instance (system text folded in where the model has no system role)."""
    return render_messages(question.template, spec, {**row, **extra}, system_role=model.system_role)


def check_scoring_method(spec: StudySpec, method: str) -> None:
    """ConfigError unless ``method`` can score study ``spec`` at all (checked before any model time).

    First-token methods see only the first token of each option: options of different
    labels that start with the same word can never be told apart, so every row would fail.
    """
    if method not in FIRST_TOKEN_METHODS:
        return
    if method == "seed-literal" and spec.probability_summary != "study1_states":
        raise ConfigError(f"--scoring seed-literal reproduces the seed's Study 1 extractor only; study {spec.number} has no "
                          "seed method to reproduce. Run it with --scoring exact (or --studies 1)")
    for question in spec.probability_questions:
        firsts: dict[str, str] = {}
        for label, forms in question.options.items():
            for form in forms:
                word = form.split()[0] if form.split() else form
                if firsts.setdefault(word, label) != label:
                    raise ConfigError(
                        f"--scoring {method} cannot score study {spec.number}: its options {firsts[word]!r} and {label!r} both start "
                        f"with {word!r}, so their first tokens are the same and no row could be scored. Use --scoring exact "
                        f"(or leave study {spec.number} out with --studies)")


# The seed's Study 1 extractor (seed 000, src/extract_probabilities_study1.py), verbatim.
SEED_ITEM_MAP = {
    "exams": "exams have passing grades", "letters": "letters have checks inside", "tickets": "tickets have won",
    "fruits": "fruits have dried out pith", "phones": "phones are defective", "seeds": "seeds will sprout",
}
SEED_STATE_TOP_K = 15
SEED_KNOWLEDGE_TOP_K = 10
SEED_TEMPERATURE = 1.0


def seed_literal_prompt(question: str, row: dict[str, Any]) -> tuple[str, int]:
    """The seed's prompt text and top-k for question 'state' (``row['state']`` set) or 'knowledge'."""
    if question == "knowledge":
        return f"{row['story_setup']}\n\n{row['speach']}\n\n{row['knowledgeQ']}\n\nAnswer with only yes or no:", SEED_KNOWLEDGE_TOP_K
    property_desc = SEED_ITEM_MAP.get(row["story_shortname"], "items have the property")
    return (f"{row['story_setup']}\n\n{row['speach']}\n\nQuestion: What percentage probability do you assign that exactly "
            f"{row['state']} of the 3 {property_desc}?\n\nExpress your answer as a percentage from 0% to 100%, in increments "
            f"of 10% (e.g., 0%, 10%, 20%, etc.).\n\nAnswer with just the percentage:"), SEED_STATE_TOP_K


def _choices(body: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != expected:
        raise Unscorable(f"sent {expected} prompts, the server answered {len(choices)} choices")
    return choices


def _top_logprobs(body: dict[str, Any]) -> dict[str, float]:
    try:
        top = body["choices"][0]["logprobs"]["top_logprobs"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise MissingLogprobs("the server's answer has no top_logprobs for the first generated token") from exc
    if not isinstance(top, dict) or not top:
        raise MissingLogprobs("the server's answer has no top_logprobs for the first generated token")
    return top


async def option_scores(
    client: LLMClient, model: ModelSpec, question: QuestionIds, separate_requests: bool = False
) -> dict[str, list[float]]:
    """Per label, the summed token log-probabilities of each surface form after the context (each checked).

    One request carries every option (the embedded server evaluates the shared context
    once); ``separate_requests`` sends each option alone (a from-scratch evaluation, the
    benchmark's reference).
    """
    prompts = question.prompts()
    base = {"model": model.request_model, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
    if separate_requests:
        bodies = await asyncio.gather(*(client.post_json(COMPLETIONS_PATH, {**base, "prompt": [ids]}, decode_echo) for _, ids in prompts))
        choices = [_choices(b.body, 1)[0] for b in bodies]
    else:
        reply = await client.post_json(COMPLETIONS_PATH, {**base, "prompt": [ids for _, ids in prompts]}, decode_echo)
        choices = _choices(reply.body, len(prompts))
    start = len(question.context)
    per_label: dict[str, list[float]] = {}
    for (label, ids), choice in zip(prompts, choices):
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        if logprobs is not None and not isinstance(logprobs, dict):
            raise Unscorable("choices[].logprobs is not an object")
        values = (logprobs or {}).get("token_logprobs")
        if not isinstance(values, list):
            raise MissingLogprobs("the server's answer has no echoed token_logprobs")
        per_label.setdefault(label, []).append(option_logprob(values, start, len(ids), f"option {label!r}"))
    return per_label


async def score_exact(client: LLMClient, model: ModelSpec, question: QuestionIds, separate_requests: bool = False) -> Distribution:
    """Softmax over labels of each label's log-probability (its surface forms' probabilities added)."""
    per_label = await option_scores(client, model, question, separate_requests)
    return softmax_distribution({label: logsumexp(scores) for label, scores in per_label.items()})


async def _score_exact_question(client, model, messages, options, replies: Optional[ReplyTokenizer] = None) -> Distribution:
    return await score_exact(client, model, await question_ids(client, model, messages, options, replies))


async def _first_token_top(client: LLMClient, model: ModelSpec, context: list[int]) -> dict[str, float]:
    payload = {"model": model.request_model, "prompt": context, "max_tokens": 1, "temperature": 0.0, "logprobs": FIRST_TOKEN_TOP_K}
    return _top_logprobs((await client.post_json(COMPLETIONS_PATH, payload)).body)


async def _score_first_token(client: LLMClient, model: ModelSpec, messages, options, replies: Optional[ReplyTokenizer] = None
                             ) -> Distribution:
    context, _ = await context_ids(client, model, messages, replies)
    return first_token_distribution(await _first_token_top(client, model, context), options)


async def _score_seed_literal(client: LLMClient, model: ModelSpec, prompt: str, top_k: int, options) -> Distribution:
    payload = {"model": model.request_model, "prompt": prompt, "max_tokens": 1, "temperature": SEED_TEMPERATURE, "logprobs": top_k}
    targets = {label: forms[0] for label, forms in options.items()}  # the seed's targets: '0%'..'100%', 'yes'/'no'
    return seed_literal_distribution(_top_logprobs((await client.post_json(COMPLETIONS_PATH, payload)).body), targets)


def summarize_study1(d: dict[str, Distribution]) -> dict[str, Any]:
    """The seed's §3 columns from the 'state0'..'state3' and 'knowledge' distributions."""
    out: dict[str, Any] = {}
    for k in STATES:
        for p in PERCENT_BINS:
            out[f"state{k}_prob_{p}"] = d[f"state{k}"].probs[str(p)]
    for k in STATES:  # seed order: all probabilities, then the summaries
        probs = [out[f"state{k}_prob_{p}"] for p in PERCENT_BINS]
        # a bin the first-token method could not score (colliding or missing): mean/std would treat the rest as complete
        complete = not any(math.isnan(v) for v in probs)
        out[f"state{k}_mean"], out[f"state{k}_std"] = mean_std(probs, PERCENT_BINS) if complete else (math.nan, math.nan)
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


SMOKE_POLICY = RetryPolicy(max_attempts=3, base_delay_s=0.5, max_delay_s=2.0)


async def _build_check_question(client, model, method, spec: StudySpec, question: ProbabilityQuestion, row: dict[str, Any],
                                replies: ReplyTokenizer) -> tuple[str, QuestionIds | list[int]]:
    """The first instance of ``question`` for ``row``: its ids (exact) or context ids (first-token); errors converted."""
    instance, extra = question.instances()[0]
    messages = scoring_messages(question, spec, row, extra, model)
    try:
        if method == "exact":
            return instance, await question_ids(client, model, messages, question.options, replies)
        return instance, (await context_ids(client, model, messages, replies))[0]
    except RequestFailed as exc:
        raise ServerError(
            f"the server for {model.name!r} cannot render its chat template through POST /tokenize and /detokenize: {exc.reason}. "
            "Experiment 2 scores each option as the reply under the template the server uses for Experiment 1; serve the model "
            "with a chat template (vLLM: --chat-template FILE for a base model) on a server with /tokenize (vLLM, the embedded server)"
        ) from exc
    except OptionIdsError as exc:
        prefix = f" after its reply_prefix {model.reply_prefix!r}" if model.reply_prefix else ""
        raise ConfigError(f"Experiment 2 cannot score {model.name!r} on study {spec.number}: question {instance!r} of the first "
                          f"input row, the options{prefix}: {exc}. Stopped before any row was scored") from exc
    except Unscorable as exc:
        raise ServerError(f"Experiment 2 cannot build the scoring context of {model.name!r} on study {spec.number} (question "
                          f"{instance!r} of the first input row): {exc}. Stopped before any row was scored") from exc


async def _check_logprobs(client: LLMClient, model: ModelSpec, method: str, instance: str, probe: Callable[[], Awaitable[Any]],
                          policy: RetryPolicy) -> None:
    """Run ``probe`` (one real scoring request) until it gives usable log-probabilities, up to ``policy.max_attempts`` times."""
    missing: list[str] = []
    malformed: list[str] = []
    for attempt in range(1, policy.max_attempts + 1):
        try:
            await probe()
            return
        except RequestFailed as exc:
            raise ServerError(f"the server for {model.name!r} did not answer the log-probability check "
                              f"(question {instance!r} of the first input row, /v1/completions): {exc.reason}") from exc
        except MissingLogprobs as exc:
            missing.append(str(exc))
        except Unscorable as exc:
            malformed.append(f"malformed reply ({exc})")
        delay = backoff_delay(attempt, policy)
        if delay is not None:
            await asyncio.sleep(delay)
    if missing and not malformed:
        needed = ("prompt-token log-probabilities for a token-id prompt (/v1/completions with echo: true, logprobs: 1)"
                  if method == "exact" else f"top_logprobs for the next token (/v1/completions with logprobs: {FIRST_TOKEN_TOP_K})")
        raise ServerError(f"the server for {model.name!r} does not return {needed}; {len(missing)} well-formed replies without "
                          f"them: {missing[-1]}. Experiment 2 needs them; vLLM and the embedded server support them.")
    raise ServerError(f"the server for {model.name!r} answered the log-probability check {policy.max_attempts} times without "
                      f"a usable reply: {'; '.join(dict.fromkeys(malformed + missing))}")


async def check_scoring_server(
    client: LLMClient, model: ModelSpec, method: str, spec: StudySpec, row: dict[str, Any],
    replies: Optional[ReplyTokenizer] = None, policy: RetryPolicy = SMOKE_POLICY,
) -> None:
    """Fail fast, before any row, unless one real question of each kind in ``spec`` can be scored on ``row``.

    For each of the study's questions (its first instance), on the first input row: the
    context is built from the server's chat template (``/tokenize``), the options get ids of
    their own after it (no boundary merge, prefix-free), and one real scoring request gives
    usable log-probabilities. Errors name the cause: :class:`ServerError` (exit 4) for a
    server without a chat template, without ``/tokenize`` or without the log-probabilities
    needed; :class:`ConfigError` (exit 2) for options that have no ids of their own with this
    model's tokenizer and reply prefix (the same on every row). The scoring request is asked
    again up to ``policy.max_attempts`` times on a malformed reply (the client itself retries
    HTTP and connection failures). ``seed-literal`` sends raw text completions, the seed's own
    request: rows fail with the server's reason.
    """
    if method == "seed-literal":
        return
    replies = replies or ReplyTokenizer(client, model)
    for question in spec.probability_questions:
        instance, built = await _build_check_question(client, model, method, spec, question, row, replies)
        if isinstance(built, QuestionIds):
            ids = built

            async def probe() -> Any:
                return await score_exact(client, model, ids)
        else:
            context = built

            async def probe() -> Any:
                return await _first_token_top(client, model, context)
        await _check_logprobs(client, model, method, instance, probe, policy)


async def score_row(
    row: dict[str, Any], spec: StudySpec, model: ModelSpec, client: LLMClient, method: ScoringMethod,
    replies: Optional[ReplyTokenizer] = None,
) -> dict[str, Distribution]:
    """Every question instance of ``row`` scored concurrently; raises Unscorable/RequestFailed."""
    replies = replies or ReplyTokenizer(client, model)
    jobs: list[tuple[str, Any]] = []
    for question in spec.probability_questions:
        for instance, extra in question.instances():
            if method == "seed-literal":
                prompt, top_k = seed_literal_prompt(question.name, {**row, **extra})
                job = _score_seed_literal(client, model, prompt, top_k, question.options)
            else:
                messages = scoring_messages(question, spec, row, extra, model)
                score = _score_exact_question if method == "exact" else _score_first_token
                job = score(client, model, messages, question.options, replies)
            jobs.append((instance, job))
    results = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)
    scored: dict[str, Distribution] = {}
    for (instance, _), result in zip(jobs, results):
        if isinstance(result, Unscorable):
            raise Unscorable(f"{instance}: {result}") from result
        if isinstance(result, RequestFailed):
            raise RequestFailed(f"{instance}: {result.reason}", result.attempts, result.status_code) from result
        if isinstance(result, BaseException):
            raise result
        scored[instance] = result
    return scored


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
    problems += [f"{name}: incomplete distribution, its mean/std are not computed" for name, d in distributions.items()
                 if any(math.isnan(p) for p in d.probs.values())]
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
    check_scoring_method(spec, method)
    rows = inputs.to_dict(orient="records")
    replies = ReplyTokenizer(client, model)  # the options' ids, asked of the server once for the whole step
    if rows:
        await check_scoring_server(client, model, method, spec, rows[0], replies)

    async def work(index: int) -> dict[str, Any]:
        try:
            distributions = await score_row(rows[index], spec, model, client, method, replies)
        except (Unscorable, RequestFailed) as exc:
            reason = exc.reason if isinstance(exc, RequestFailed) else str(exc)
            return probability_record(index, rows[index], spec, model, run_id, method, min_option_mass, error=reason)
        return probability_record(index, rows[index], spec, model, run_id, method, min_option_mass, distributions)

    # each row already sends several requests at once: keep about `concurrency` requests in flight
    window = max(1, client.concurrency // max(1, sum(len(q.instances()) for q in spec.probability_questions)))
    return await run_resumable(range(len(rows)), item_key=lambda i: (i, 0), is_done=lambda i, r: r.get("status") == "ok",
                               work=work, window=window, checkpoint=checkpoint, progress=progress, base=lambda i: rows[i])
