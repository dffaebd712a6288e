"""The embedded model server: a thin OpenAI/vLLM-compatible app over ``llama_cpp.Llama``.

Why not ``llama_cpp.server``: as shipped it spends ~0.37 s per prompt position on
echo logprobs (a Python sort of the 262k vocabulary), which makes exact option scoring
unusable on a laptop. Here log-probabilities come from a numpy log-softmax over the
logits llama.cpp already computed.

It offers the endpoints Experiment 2 uses on vLLM, so the laptop default and the tests
take the same path as the cluster (``steps/server_prompt.py``):

* ``GET /v1/models``, ``GET /version``;
* ``POST /v1/chat/completions``: generation through the model's chat format;
* ``POST /tokenize``: ``{"messages": [...], "add_generation_prompt": true}`` gives the ids
  of the chat prompt exactly as ``/v1/chat/completions`` builds it (the same llama.cpp
  chat formatter object renders both, BOS included); ``{"prompt": TEXT,
  "add_special_tokens": bool}`` tokenizes text (special-token text such as ``<bos>`` is
  parsed). Answer: ``{"tokens", "count", "max_model_len"}`` as vLLM's.
* ``POST /detokenize``: ``{"tokens": [...]}`` -> ``{"prompt": TEXT}``, special tokens
  written out, so ``/tokenize`` of that text without special tokens gives the ids back.
* ``POST /v1/completions`` with ``max_tokens: 1``: ``prompt`` is a string, a list of
  strings, a list of token ids or a list of such lists (one choice per prompt, ``index`` =
  position). With ``echo: true`` and ``logprobs`` set, ``choices[i].logprobs`` has ``tokens``,
  ``token_logprobs`` and ``text_offset`` for every prompt token plus the one generated
  (greedy) token; without echo it has the generated token and its ``top_logprobs`` (up to
  ``logprobs`` entries). Natural-log probabilities of the raw model (temperature does not
  apply).

Computation order (reproducible whatever the request order). A request with one prompt is
evaluated from scratch in one batch (its echo has log-probabilities for the last ``ECHO_TAIL``
positions; earlier ones are ``null``: computing the 262k-entry distribution at every position
would double the cost). A request with several prompts is evaluated as their
shared prefix (the question's context, and the options' common first tokens if any) from
scratch in one batch, then each prompt's rest as one batch continuing exactly that prefix;
token log-probabilities before the prefix's last ``SHARED_TAIL`` positions are not computed
(``null``). The same request always gives the same
numbers. With this quantized model on CPU llama.cpp's numbers depend on how a sequence is
split into batches, so these scores differ slightly from a from-scratch evaluation of each
whole prompt (measured by ``benchmarks/scoring_throughput.py``; see the README).
``usage.prompt_tokens`` counts every prompt token and
``usage.prompt_tokens_details.cached_tokens`` those not evaluated again (the shared prefix).

Run: ``python -m pipeline.model_server.embedded_server --model M.gguf --port N --alias NAME --chat-format gemma``.
"""

from __future__ import annotations

import argparse
import codecs
import threading
from importlib import metadata
from typing import Any, Optional, Sequence

import numpy as np

MAX_TOP_LOGPROBS = 20
LSE_CHUNK_ROWS = 16
SHARED_TAIL = 16  # log-probabilities at the shared prefix's last positions (options may share their first tokens: 'It was')
ECHO_TAIL = 64  # a lone prompt's echo has log-probabilities for its last positions only (an option is a few tokens)


class Scorer:
    """Prompt-token log-probabilities from one ``llama_cpp.Llama`` (decoding with per-row logit flags).

    :meth:`log_probs` evaluates a prompt from scratch; :meth:`prefix_and_rests` evaluates a
    shared prefix once, then each rest as a continuation of it. Both return, per prompt,
    ``(token_lp, next_lp)``: ``token_lp[i]`` = log P(tokens[i+1] | tokens[:i+1]) (NaN where
    not computed) and ``next_lp`` the log-softmax of the distribution after the last token.
    Only the logit rows needed are produced (the hidden states are the same).
    """

    def __init__(self, llm: Any):
        self.llm = llm

    def _clear(self) -> None:
        self.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        self.llm.n_tokens = 0  # the chat path must not reuse this KV cache

    def _run(self, tokens: Sequence[int], n_past: int, first_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode ``tokens`` at positions ``n_past``.. in one batch; log-probs from row ``first_row`` on."""
        llm, n = self.llm, len(tokens)
        if n_past + n > llm.n_ctx() or n > llm.n_batch:
            raise ValueError(f"prompt has {n_past + n} tokens; this server takes at most {min(llm.n_ctx(), llm.n_batch)}")
        batch = llm._batch
        batch.set_batch(batch=list(tokens), n_past=n_past, logits_all=False)
        for i in range(n):
            batch.batch.logits[i] = i >= first_row
        llm._ctx.decode(batch)
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

    def log_probs(self, tokens: list[int], first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``tokens`` evaluated from scratch in one batch; log-probs from row ``first_row`` on."""
        first_row = min(max(0, first_row), len(tokens) - 1)
        self._clear()
        try:
            return self._run(tokens, 0, first_row)
        finally:
            self._clear()

    def prefix_and_rests(self, prefix: list[int], rests: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``prefix`` from scratch in one batch, then each rest as one batch after exactly that prefix.

        Returns ``(token_lp, next_lp)`` of each whole prompt ``prefix + rest`` (positions
        before the prefix's last ``SHARED_TAIL`` tokens are NaN: the options of a question may
        share their first tokens, which then belong to the prefix).
        """
        n = len(prefix)
        self._clear()
        try:
            prefix_lp, after_prefix = self._run(prefix, 0, max(0, n - 1 - SHARED_TAIL))
            out = []
            for rest in rests:
                token_lp = np.full(n + len(rest) - 1, np.nan)
                token_lp[: n - 1] = prefix_lp
                if not rest:
                    out.append((token_lp, after_prefix))
                    continue
                self.llm._ctx.kv_cache_seq_rm(-1, n, -1)
                rest_lp, next_lp = self._run(rest, n, 0)
                token_lp[n - 1] = after_prefix[rest[0]]
                token_lp[n:] = rest_lp
                out.append((token_lp, next_lp))
            return out
        finally:
            self._clear()


def _pieces(llm: Any, tokens: list[int]) -> list[str]:
    """Text of each token (BOS -> ''), decoded incrementally so a character split over tokens is not lost."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return [decoder.decode(llm._model.detokenize([t], special=False)) for t in tokens]


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


def prompt_token_lists(llm: Any, prompt: Any) -> list[list[int]]:
    """The request's ``prompt`` (string, strings, ids or lists of ids) as token-id lists; text gets BOS."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise ValueError("prompt must be a string, a list of strings, a list of token ids or a list of such lists")
    lists = []
    for p in prompt:
        if isinstance(p, str):
            lists.append(llm.tokenize(p.encode("utf-8"), add_bos=True, special=True))
        elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < llm.n_vocab() for t in p):
            lists.append(list(p))
        else:
            raise ValueError("each prompt must be a non-empty string or a non-empty list of token ids within the vocabulary")
    return lists


def completion_choice(llm: Any, tokens: list[int], lp: tuple[np.ndarray, np.ndarray], index: int, echo: bool, top_n: int) -> dict[str, Any]:
    """One OpenAI completions choice for the tokenized prompt and its log-probs (see the module docstring)."""
    token_lp, next_lp = lp
    generated = int(np.argmax(next_lp))
    gen_text = llm.detokenize([generated], prev_tokens=tokens).decode("utf-8", errors="ignore")
    top: np.ndarray | list[int] = np.argpartition(-next_lp, min(top_n, len(next_lp) - 1))[:top_n] if top_n else []
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


def chat_formatter(name: str):
    """llama-cpp-python's chat formatter for ``name`` (e.g. 'gemma' -> ``format_gemma``)."""
    from llama_cpp import llama_chat_format

    formatter = getattr(llama_chat_format, "format_" + name.replace("-", "_").replace(".", "_"), None)
    if formatter is None:
        raise ValueError(f"llama-cpp-python has no chat formatter {name!r} this server can render for /tokenize")
    return formatter


def build_app(llm: Any, alias: str, formatter: Any):
    """The Starlette app serving ``llm`` under the model name ``alias``; ``formatter`` renders chat prompts."""
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

    def _tokenize(body: dict[str, Any]) -> dict[str, Any]:
        if "messages" in body:
            if not body.get("add_generation_prompt", True) or body.get("continue_final_message"):
                raise ValueError("this server renders chat prompts up to the reply only (add_generation_prompt true)")
            rendered = formatter(messages=body["messages"])  # what create_chat_completion does with these messages
            tokens = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        elif isinstance(body.get("prompt"), str):
            tokens = llm.tokenize(body["prompt"].encode("utf-8"), add_bos=bool(body.get("add_special_tokens", True)), special=True)
        else:
            raise ValueError("send 'prompt' (text) or 'messages' (chat)")
        return {"tokens": tokens, "count": len(tokens), "max_model_len": llm.n_ctx()}

    def _detokenize(body: dict[str, Any]) -> dict[str, Any]:
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and 0 <= t < llm.n_vocab() for t in tokens):
            raise ValueError("tokens must be a list of token ids within the vocabulary")
        return {"prompt": llm.detokenize(tokens, special=True).decode("utf-8", errors="replace")}

    def _complete(body: dict[str, Any]) -> dict[str, Any]:
        if int(body.get("max_tokens", 16)) != 1:
            raise ValueError("this embedded server scores prompts only: send max_tokens 1 (use /v1/chat/completions to generate)")
        token_lists = prompt_token_lists(llm, body.get("prompt"))
        echo = bool(body.get("echo"))
        top_n = min(int(body.get("logprobs") or 0), MAX_TOP_LOGPROBS)
        n_shared = shared_prefix(token_lists)
        with lock:
            if n_shared:
                lps = scorer.prefix_and_rests(token_lists[0][:n_shared], [t[n_shared:] for t in token_lists])
                evaluated = n_shared + sum(len(t) - n_shared for t in token_lists)
            else:
                lps = [scorer.log_probs(t, max(0, len(t) - 1 - ECHO_TAIL) if echo else len(t) - 1) for t in token_lists]
                evaluated = sum(len(t) for t in token_lists)
            choices = [completion_choice(llm, t, lp, i, echo, top_n) for i, (t, lp) in enumerate(zip(token_lists, lps))]
        n_prompt = sum(len(t) for t in token_lists)
        return {"object": "text_completion", "model": alias, "choices": choices,
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(choices), "total_tokens": n_prompt + len(choices),
                          "prompt_tokens_details": {"cached_tokens": n_prompt - evaluated}}}

    def endpoint(work):
        async def handler(request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                return error(400, "request body is not JSON")
            if not isinstance(body, dict):
                return error(400, "request body must be a JSON object")
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
        Route("/tokenize", endpoint(_tokenize), methods=["POST"]),
        Route("/detokenize", endpoint(_detokenize), methods=["POST"]),
    ])


def main(argv: Optional[list[str]] = None) -> None:
    """Serve one GGUF model as the embedded OpenAI-compatible server (the server process's entry point)."""
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
    from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler

    formatter = chat_formatter(args.chat_format)
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.n_ctx, n_batch=args.n_ctx, n_threads=args.threads,
                          n_threads_batch=args.threads, logits_all=False,
                          chat_handler=chat_formatter_to_chat_completion_handler(formatter), verbose=False)
    uvicorn.run(build_app(llm, args.alias, formatter), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
