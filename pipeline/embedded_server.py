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
direct ``Llama.eval`` of the same text, whatever the request order.

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


class Scorer:
    """Prompt-token log-probabilities from one ``llama_cpp.Llama(logits_all=True)``.

    ``log_probs(tokens)`` returns, for position i >= 1, log P(tokens[i] | tokens[:i]),
    and the log-softmax of the next-token distribution after the last token. The
    sequence is evaluated from scratch (see the module docstring) unless it is exactly
    the sequence evaluated last.
    """

    def __init__(self, llm: Any):
        self.llm = llm
        self._lse = np.zeros(llm.n_ctx(), dtype=np.float64)  # log-sum-exp of each position's logits
        self._lse_valid = 0

    def _evaluate(self, tokens: list[int]) -> None:
        llm = self.llm
        if llm.n_tokens == len(tokens) and list(llm.input_ids[: llm.n_tokens]) == list(tokens):
            return  # the same sequence: llm.scores already holds its logits
        llm.reset()
        llm.eval(tokens)
        self._lse_valid = 0

    def log_probs(self, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        if len(tokens) > self.llm.n_ctx():
            raise ValueError(f"prompt has {len(tokens)} tokens; this server's context is {self.llm.n_ctx()}")
        self._evaluate(tokens)
        n = len(tokens)
        logits = self.llm.scores[:n]
        for start in range(self._lse_valid, n, LSE_CHUNK_ROWS):  # chunks keep the float32 work in cache
            rows = logits[start : min(n, start + LSE_CHUNK_ROWS)]
            peak = rows.max(axis=1, keepdims=True)
            self._lse[start : start + len(rows)] = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1, dtype=np.float64))
        self._lse_valid = max(self._lse_valid, n)
        positions = np.arange(n - 1)
        token_lp = logits[positions, np.asarray(tokens[1:], dtype=np.int64)] - self._lse[: n - 1]
        next_lp = logits[n - 1].astype(np.float64) - self._lse[n - 1]
        return token_lp, next_lp


def _pieces(llm: Any, tokens: list[int]) -> list[str]:
    """Text of each token such that ''.join(pieces) is the detokenized prompt (BOS -> '')."""
    texts, done = [], b""
    for i in range(len(tokens)):
        upto = llm.detokenize(tokens[: i + 1])
        texts.append(upto[len(done):].decode("utf-8", errors="ignore") if upto.startswith(done) else upto.decode("utf-8", errors="ignore"))
        done = upto
    return texts


def completion_choice(llm: Any, scorer: Scorer, prompt: str, index: int, echo: bool, top_n: int) -> dict[str, Any]:
    """One OpenAI completions choice for ``prompt`` (see the module docstring)."""
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    token_lp, next_lp = scorer.log_probs(tokens)
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
        "token_logprobs": [None] + [float(v) for v in token_lp] + [float(next_lp[generated])],
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
            )

    def _complete(body: dict[str, Any]) -> dict[str, Any]:
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if int(body.get("max_tokens", 16)) != 1:
            raise ValueError("this embedded server scores prompts only: send max_tokens 1 (use /v1/chat/completions to generate)")
        top_n = min(int(body.get("logprobs") or 0), MAX_TOP_LOGPROBS)
        with lock:
            choices = [completion_choice(llm, scorer, p, i, bool(body.get("echo")), top_n) for i, p in enumerate(prompts)]
        n_prompt = sum(len(c["logprobs"]["tokens"]) - 1 for c in choices) if body.get("echo") else None
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

    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.n_ctx, n_threads=args.threads, logits_all=True,
                          chat_format=args.chat_format, verbose=False)
    uvicorn.run(build_app(llm, args.alias), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
