"""Measurement: what Experiment 2 scores ("the reply starts with the option") against the end-of-turn variant.

``exact`` scores each option as the probability that the model's reply *starts with* it:
whatever it writes after the option ('It was good.', 'It was good, but ...') counts. The
end-of-turn variant scores the option followed by the template's end-of-turn token
(Gemma: ``<end_of_turn>``): the probability that the reply is the option and nothing else.

On the REAL embedded model (Gemma 3 270M, the laptop default) this prints, per question of
the first rows of both studies, both ways: the options' total probability (mass), the mean
P(end of turn | option), the total-variation distance between the two normalised
distributions and whether their most probable option agrees; and, for the record, whether
each option's ids (tokenized on its own, as the model writes its reply) equal the ids the
joined text (prompt text + option) would give on this tokenizer.

Run from the repository root: ``python -m benchmarks.end_of_turn [--rows1 2 --rows2 4]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
from pathlib import Path

import httpx

from pipeline.config import example_study_path
from pipeline.model_server.embedded import EmbeddedServers
from pipeline.registry import EMBEDDED_DEFAULT, load_registry
from schemas.settings import ModelSpec
from steps.inputs import load_study_table
from steps.llm_client import LLMClient
from steps.probabilities import option_scores, scoring_messages
from steps.scoring import logsumexp, softmax_distribution
from steps.server_prompt import QuestionIds, ReplyTokenizer, chat_prompt, question_ids, tokenize_text
from steps.studies import load_study

END_OF_TURN = "<end_of_turn>"  # Gemma's end-of-turn token (llama.cpp's 'gemma' chat format stops on it)


async def measure_question(client: LLMClient, model: ModelSpec, q: QuestionIds, eot: tuple[int, ...]) -> dict:
    """Both ways for one question: masses, distributions, mean P(eot | option)."""
    start = await option_scores(client, model, q)
    ended_q = QuestionIds(q.context, {label: tuple((*ids, *eot) for ids in forms) for label, forms in q.options.items()})
    ended = await option_scores(client, model, ended_q)
    a = softmax_distribution({label: logsumexp(s) for label, s in start.items()})
    b = softmax_distribution({label: logsumexp(s) for label, s in ended.items()})
    p_eot = [math.exp(e - s) for label in start for s, e in zip(start[label], ended[label])]
    return {"mass_start": a.mass, "mass_eot": b.mass, "p_eot": statistics.mean(p_eot),
            "tv": 0.5 * sum(abs(a.probs[k] - b.probs[k]) for k in a.probs),
            "same_top": max(a.probs, key=a.probs.__getitem__) == max(b.probs, key=b.probs.__getitem__)}


async def joined_ids_agree(client: LLMClient, model: ModelSpec, messages, q: QuestionIds, options) -> tuple[int, int]:
    """How many option forms' ids (tokenized on their own) equal the suffix of the joined text's ids, of how many."""
    prompt_ids, text = await chat_prompt(client, model, messages)
    same = total = 0
    for label, forms in options.items():
        for form, ids in zip(forms, q.options[label]):
            joined = await tokenize_text(client, model, text + form)
            same += joined[: len(prompt_ids)] == prompt_ids and tuple(joined[len(prompt_ids):]) == ids
            total += 1
    return same, total


async def run(urls: list[str], model: ModelSpec, rows: dict[int, int]) -> None:
    """Print the comparison for the first ``rows[study]`` rows of each study."""
    async with httpx.AsyncClient(timeout=600) as http:
        client = LLMClient(http, urls, 1)
        eot = tuple(await tokenize_text(client, model, END_OF_TURN))
        print(f"end-of-turn ids for {END_OF_TURN!r}: {list(eot)}")
        replies = ReplyTokenizer(client, model)
        for number, n in rows.items():
            spec = load_study(number)
            frame = load_study_table(example_study_path(number), spec).frame.head(n)
            results, same, total = [], 0, 0
            for row in frame.to_dict(orient="records"):
                for question in spec.probability_questions:
                    for instance, extra in question.instances():
                        messages = scoring_messages(question, spec, row, extra, model)
                        q = await question_ids(client, model, messages, question.options, replies)
                        results.append((instance, await measure_question(client, model, q, eot)))
                        s, t = await joined_ids_agree(client, model, messages, q, question.options)
                        same, total = same + s, total + t
            print(f"\nStudy {number}, {n} rows, {len(results)} questions; option ids on their own = joined-text ids: {same} of {total}")
            print(f"{'question':<12} {'mass (starts with)':>19} {'mass (+ eot)':>13} {'mean P(eot|option)':>19} "
                  f"{'TV distance':>12} same top")
            for instance, r in results:
                print(f"{instance:<12} {r['mass_start']:>19.4g} {r['mass_eot']:>13.4g} {r['p_eot']:>19.4g} {r['tv']:>12.3f} "
                      f"{r['same_top']}")
            for key in ("mass_start", "mass_eot", "p_eot", "tv"):
                values = [r[key] for _, r in results]
                print(f"  {key}: median {statistics.median(values):.4g}, min {min(values):.4g}, max {max(values):.4g}")
            print(f"  most probable option the same both ways: {sum(r['same_top'] for _, r in results)} of {len(results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows1", type=int, default=2)
    parser.add_argument("--rows2", type=int, default=4)
    args = parser.parse_args()
    model = load_registry()[EMBEDDED_DEFAULT]
    with tempfile.TemporaryDirectory() as logs, EmbeddedServers(model, 1, Path(logs)) as servers:
        asyncio.run(run(servers.urls, model, {1: args.rows1, 2: args.rows2}))


if __name__ == "__main__":
    main()
