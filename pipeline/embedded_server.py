"""The embedded model server: a thin OpenAI-compatible app over ``llama_cpp.Llama``.

Why not ``llama_cpp.server``: as shipped it spends ~0.37 s per prompt position on
echo logprobs (a Python sort of the 262k vocabulary), which makes exact option scoring
unusable on a laptop. Here log-probabilities come from a numpy log-softmax over the
logits llama.cpp already computed.

Every scored prompt is evaluated from scratch in one batch, never continued from a
cached prefix: with this quantized model on CPU, llama.cpp's numbers depend on how a
sequence was split into batches (measured: up to ~0.1 nats per option between a full
evaluation and a cached-prefix continuation), so reusing the cache would make a score
depend on which prompt happened to come before it. From scratch, a score equals a
direct ``Llama.eval`` of the same text, whatever the request order. To save time, when
one request lists several prompts, log-probabilities are returned only from
``SHARED_PREFIX_MARGIN`` tokens before the point where the prompts start to differ
(earlier positions get ``null``): options share their context, and only the options'
own tokens are scored.

Endpoints (one request at a time per process):

* ``GET /v1/models``, ``GET /version``;
* ``POST /v1/chat/completions``: generation through the model's chat format;
* ``POST /v1/completions`` with ``max_tokens: 1``: ``prompt`` is a string or a list of
  strings (one choice per prompt, ``index`` = position). With ``echo: true`` and
  ``logprobs`` set, ``choices[i].logprobs`` has ``tokens``, ``token_logprobs`` (None
  for the first token, which has no context) and ``text_offset`` (characters into the
  returned ``text``) for every prompt token plus the one generated (greedy) token; without
  echo it has the generated token and its ``top_logprobs`` (up to ``logprobs`` entries).
  Natural-log probabilities of the raw model (temperature does not apply).

Run: ``python -m pipeline.embedded_server --model M.gguf --port N --alias NAME --chat-format gemma``.
"""

from __future__ import annotations

import argparse
import threading
from importlib import metadata
from typing import Any, Optional

import numpy as np

MAX_TOP_LOGPROBS = 20
LSE_CHUNK_ROWS = 16
SHARED_PREFIX_MARGIN = 32


class Scorer:
    """Prompt-token log-probabilities from one ``llama_cpp.Llama`` (decoding with per-row logit flags).

    ``log_probs(tokens, first_row)`` evaluates ``tokens`` from scratch in one batch and
    returns, for each position i >= max(1, first_row + 1), log P(tokens[i] | tokens[:i])
    (NaN before that), and the log-softmax of the next-token distribution after the
    last token. Only logit rows from ``first_row`` on are produced (the hidden states
    are the same; measured: identical logits, ~3x faster on a 64-token prompt).
    """

    def __init__(self, llm: Any):
        self.llm = llm

    def log_probs(self, tokens: list[int], first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
        llm, n = self.llm, len(tokens)
        if n > llm.n_ctx() or n > llm.n_batch:
            raise ValueError(f"prompt has {n} tokens; this server takes at most {min(llm.n_ctx(), llm.n_batch)}")
        first_row = min(max(0, first_row), n - 1)
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = 0  # the chat path must not reuse this KV cache
        batch = llm._batch
        batch.set_batch(batch=tokens, n_past=0, logits_all=False)
        for i in range(n):
            batch.batch.logits[i] = i >= first_row
        llm._ctx.decode(batch)
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        rows = n - first_row
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(rows * llm.n_vocab(),)).reshape(rows, -1)
        lse = np.empty(rows, dtype=np.float64)
        for start in range(0, rows, LSE_CHUNK_ROWS):  # chunks keep the float32 work in cache
            chunk = logits[start : start + LSE_CHUNK_ROWS]
            peak = chunk.max(axis=1, keepdims=True)
            lse[start : start + len(chunk)] = peak[:, 0] + np.log(np.exp(chunk - peak).sum(axis=1, dtype=np.float64))
        token_lp = np.full(n - 1, np.nan)
        positions = np.arange(first_row, n - 1)
        token_lp[first_row:] = logits[positions - first_row, np.asarray(tokens, dtype=np.int64)[positions + 1]] - lse[: rows - 1]
        next_lp = logits[rows - 1].astype(np.float64) - lse[rows - 1]
        return token_lp, next_lp


def _pieces(llm: Any, tokens: list[int]) -> list[str]:
    """Text of each token such that ''.join(pieces) is the detokenized prompt (BOS -> '')."""
    texts, done = [], b""
    for i in range(len(tokens)):
        upto = llm.detokenize(tokens[: i + 1])
        texts.append(upto[len(done):].decode("utf-8", errors="ignore") if upto.startswith(done) else upto.decode("utf-8", errors="ignore"))
        done = upto
    return texts


def shared_prefix(token_lists: list[list[int]]) -> int:
    """Number of leading tokens all lists share (0 for a single list: nothing is shared)."""
    if len(token_lists) < 2:
        return 0
    n = 0
    for column in zip(*token_lists):
        if len(set(column)) != 1:
            break
        n += 1
    return n


def completion_choice(llm: Any, scorer: Scorer, tokens: list[int], index: int, echo: bool, top_n: int, first_row: int) -> dict[str, Any]:
    """One OpenAI completions choice for the tokenized prompt (see the module docstring)."""
    token_lp, next_lp = scorer.log_probs(tokens, first_row if echo else len(tokens) - 1)
    generated = int(np.argmax(next_lp))
    gen_text = llm.detokenize([generated], prev_tokens=tokens).decode("utf-8", errors="ignore")
    top = np.argpartition(-next_lp, min(top_n, len(next_lp) - 1))[:top_n] if top_n else []
    top_dict: dict[str, float] = {}
    for t in sorted(top, key=lambda t: -next_lp[t]):
        text = llm.detokenize([int(t)], prev_tokens=tokens).decode("utf-8", errors="ignore")
        top_dict.setdefault(text, float(next_lp[t]))
    if not echo:
        return {"index": index, "text": gen_text, "finish_reason": "length", "logprobs": {
            "tokens": [gen_text], "token_logprobs": [float(next_lp[generated])], "text_offset": [0], "top_logprobs": [top_dict]}}
    pieces = _pieces(llm, tokens)
    offsets, position = [], 0
    for piece in pieces:
        offsets.append(position)
        position += len(piece)
    text = "".join(pieces)
    return {"index": index, "text": text + gen_text, "finish_reason": "length", "logprobs": {
        "tokens": pieces + [gen_text],
        "token_logprobs": [None] + [None if np.isnan(v) else float(v) for v in token_lp] + [float(next_lp[generated])],
        "text_offset": offsets + [len(text)],
        "top_logprobs": [None] * len(pieces) + [top_dict],
    }}


def build_app(llm: Any, alias: str):
    """The Starlette app serving ``llm`` under the model name ``alias``."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    lock = threading.Lock()
    scorer = Scorer(llm)
    version = f"grace-embedded (llama-cpp-python {metadata.version('llama-cpp-python')})"

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=status)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": alias, "object": "model", "owned_by": "grace-pipeline"}]})

    async def get_version(_: Request) -> JSONResponse:
        return JSONResponse({"version": version})

    def _chat(body: dict[str, Any]) -> dict[str, Any]:
        with lock:
            return llm.create_chat_completion(
                messages=body["messages"], temperature=float(body.get("temperature", 0.7)), top_p=float(body.get("top_p", 1.0)),
                max_tokens=int(body.get("max_tokens") or 256), seed=body.get("seed"), stop=body.get("stop"),
                response_format=body.get("response_format"),  # {"type": "json_object", "schema": ...} is grammar-constrained
            )

    def _complete(body: dict[str, Any]) -> dict[str, Any]:
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if int(body.get("max_tokens", 16)) != 1:
            raise ValueError("this embedded server scores prompts only: send max_tokens 1 (use /v1/chat/completions to generate)")
        top_n = min(int(body.get("logprobs") or 0), MAX_TOP_LOGPROBS)
        token_lists = [llm.tokenize(p.encode("utf-8"), add_bos=True, special=True) for p in prompts]
        first_row = max(0, shared_prefix(token_lists) - 1 - SHARED_PREFIX_MARGIN)
        with lock:
            choices = [completion_choice(llm, scorer, t, i, bool(body.get("echo")), top_n, first_row) for i, t in enumerate(token_lists)]
        n_prompt = sum(len(t) for t in token_lists)
        return {"object": "text_completion", "model": alias, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(choices)}}

    def endpoint(work):
        async def handler(request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                return error(400, "request body is not JSON")
            if body.get("model") not in (None, alias):
                return error(404, f"model {body.get('model')!r} is not served here; this server serves {alias!r}")
            try:
                return JSONResponse(await run_in_threadpool(work, body))
            except (ValueError, KeyError, TypeError) as exc:
                return error(400, f"{type(exc).__name__}: {exc}")
        return handler

    return Starlette(routes=[
        Route("/v1/models", models), Route("/version", get_version),
        Route("/v1/chat/completions", endpoint(_chat), methods=["POST"]),
        Route("/v1/completions", endpoint(_complete), methods=["POST"]),
    ])


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="grace-pipeline's embedded OpenAI-compatible llama.cpp server")
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--alias", required=True, help="model name clients send")
    parser.add_argument("--chat-format", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import llama_cpp
    import uvicorn

    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.n_ctx, n_batch=args.n_ctx, n_threads=args.threads,
                          n_threads_batch=args.threads, logits_all=False,
                          chat_format=args.chat_format, verbose=False)
    uvicorn.run(build_app(llm, args.alias), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
