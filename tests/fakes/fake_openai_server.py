"""FAKE OpenAI-compatible model server for tests and benchmarks (not a real model).

A hand-written HTTP/1.1 server on asyncio streams, so it can misbehave at the
socket level: reset connections, truncate bodies, hang. It answers

* ``GET /v1/models``, ``GET /version`` and ``GET /health`` (503 for the first
  ``healthy_after_s`` seconds, or for the first ``healthy_after_polls`` polls, like vLLM loading a model);
* ``POST /v1/chat/completions`` with a deterministic answer derived from the
  messages and seed (so two runs over the same rows give identical answers): in the
  requested format, or with ``free_text`` in words the parser cannot settle; an
  extraction request (the extraction prompt's system message) gets the JSON a FAKE
  extractor codes from such an answer (:func:`fake_extraction`);
* ``POST /tokenize`` / ``POST /detokenize`` shaped like vLLM's: chat ``messages`` are rendered
  with ``chat_template`` (by default :func:`fake_chat_template`, a format no real model
  uses, so a test proves nothing depends on a template the project knows; ``None``: the
  server has no chat template and refuses, like vLLM for a base model);
* ``POST /v1/completions`` (``max_tokens: 1``) with a FAKE tokenizer (:class:`FakeTokenizer`:
  digits one per token, a space its own token, words with their leading space, ``[[role]]``
  markers and ``<s>`` special) whose ids are handed out on first sight, or the REAL one given
  as ``tokenizer`` (``tests/fakes/real_tokenizer.py``: Qwen's BPE), and deterministic pseudo
  log-probabilities; ``prompt`` is text (BOS ``<s>`` prepended), token ids, or a list of
  either. Echo returns every prompt token like vLLM (the first with no log-probability).
  VLLM-SHAPED COST: ``usage.prompt_tokens`` counts every prompt token of every prompt
  (vLLM skips its prefix cache for prompt-logprob requests, so each is a full prefill);
  ``prompt_tokens_total`` sums them over the server's life. ``prompt_logprobs=False``
  imitates a server that returns only the generated token's logprobs;
  ``logprob_overrides`` ({token text: value}) makes the server echo an impossible value.

Reasoning replies (``reasoning``): ``True``/``'tags'`` (the model writes ``<think>...</think>``),
``'prompt-opened'`` (only ``</think>``, as after DeepSeek-R1's ``<think>\n`` generation prompt),
``'server'`` (split as vLLM's ``deepseek_r1`` parser does, the trace in ``server_trace_field``);
``trace_words`` lengthens the trace, and a reply longer than the request's ``max_tokens`` is cut
there (``finish_reason: length``).

Faults come from ``fault_script`` (consumed one per chat request, in arrival order),
``completion_faults`` (one per ``/v1/completions`` request: ``no_choices``, a JSON reply
without choices; ``null_logprobs``, choices without log-probabilities; ``positive_logprob``,
every token at an impossible +3.0) and from markers in the prompt: a user message containing ``FAIL-ALWAYS`` always gets
HTTP 500; ``REJECT`` always gets HTTP 400. Setting ``hold_after = n`` holds every chat request after the n-th
unanswered until it is set back to None (a run that cannot finish before the test says so, whatever the
machine's load). Latency per request is drawn from a
seeded lognormal distribution (``latency_ms`` median, ``latency_sigma`` spread); with
``latency_every_post`` the ``/tokenize`` and ``/detokenize`` requests take ``latency_ms`` too (the
benchmark's server, whose bound is then concurrency / latency for every request). ``record_requests=False``
keeps no ``scoring_requests`` (a long benchmark would hold every request body); ``cache_replies`` answers a
``/v1/completions`` body seen before with the same bytes as the first time (the benchmark repeats rows: its
server then spends its CPU on HTTP, not on recomputing 60 kB of pseudo log-probabilities);
``vllm_echo_top_logprobs`` gives every echoed prompt token a ``top_logprobs`` entry (its own and one
alternative) as vLLM does for ``echo`` + ``logprobs: 1``, where the default leaves them ``null``.

Run standalone: ``python -m tests.fakes.fake_openai_server --port 8000 --latency-ms 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import socket
import struct
import threading
import time
from typing import Optional

_FAKE_TOKEN = re.compile(r"<s>|\[\[/?[a-z]+\]\]| ?[A-Za-z']+|\d|\s|[^\sA-Za-z\d]")
BOS = "<s>"


def fake_chat_template(messages: list) -> str:
    """The FAKE server's chat template: a format no real model uses (BOS, ``[[role]]`` turns, then ``[[assistant]]``)."""
    turns = "".join(f"[[{m['role']}]]\n{m['content']}\n[[end]]\n" for m in messages)
    return f"{BOS}{turns}[[assistant]]\n"


def fake_tokens(text: str) -> list[str]:
    """The FAKE tokenizer: ''.join(fake_tokens(t)) == t."""
    return _FAKE_TOKEN.findall(text)


class FakeTokenizer:
    """The FAKE tokenizer (:func:`fake_tokens`) with ids handed out on first sight; ``<s>`` (id 1) is BOS.

    The interface the FAKE server uses, so a test can give it a REAL tokenizer instead
    (``tests/fakes/real_tokenizer.py``): ``bos_id``, ``encode`` (special-token text parsed,
    nothing added), ``piece`` (one token's text, None for an unknown id) and ``decode``.
    """

    bos_id = 1

    def __init__(self) -> None:
        self._ids: dict[str, int] = {BOS: 1}
        self.pieces: dict[int, str] = {1: BOS}

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` (no BOS added; ``<s>`` in the text is the BOS token)."""
        ids = []
        for piece in fake_tokens(text):
            if piece not in self._ids:
                self._ids[piece] = len(self._ids) + 1
                self.pieces[self._ids[piece]] = piece
            ids.append(self._ids[piece])
        return ids

    def piece(self, token: int) -> Optional[str]:
        """The text of one token, None if the id was never handed out."""
        return self.pieces.get(token)

    def decode(self, tokens: list[int]) -> str:
        """The text of ``tokens`` (unknown ids give nothing)."""
        return "".join(self.pieces.get(t, "") for t in tokens)


def fake_logprob(prefix: str, token: str) -> float:
    """Deterministic pseudo log-probability of ``token`` after ``prefix``, in [-8, -2.5] (so that no
    answer set of up to 12 options carries more than all the mass: the scorer refuses that)."""
    return _logprob_of(hashlib.sha256((prefix + "\x00" + token).encode()))


def _logprob_of(digest) -> float:
    return -2.5 - (int.from_bytes(digest.digest()[:2], "big") / 65535) * 5.5


def fake_logprobs_along(pieces: list[str], skip_first: bool) -> list[float]:
    """``fake_logprob(prefix, piece)`` for every piece after the first (the prefix: the pieces before it,
    without the first when ``skip_first``), hashing each prefix once: linear in the prompt, not quadratic."""
    prefix = hashlib.sha256((pieces[0] if not skip_first and pieces else "").encode())
    values = []
    for i in range(1, len(pieces)):
        if i > 1:
            prefix.update(pieces[i - 1].encode())
        digest = prefix.copy()
        digest.update(("\x00" + pieces[i]).encode())
        values.append(_logprob_of(digest))
    return values


FAULTS = ("ok", "500", "503", "429", "400", "timeout", "reset", "truncated", "malformed", "no_choices")


def fake_answer(messages: list, seed: Optional[int]) -> str:
    """The deterministic answer the fake gives to ``messages`` with ``seed``: a well-formed
    Study 2 utterance when the prompt lists the 8 utterances, else a Study 1 answer in the
    requested format; a hash tag makes every sample distinct."""
    digest = hashlib.sha256(json.dumps([messages, seed], sort_keys=True).encode()).hexdigest()
    d = [int(c, 16) for c in digest[:6]]
    if "It wasn't amazing" in json.dumps(messages):
        frame = "was" if d[0] % 2 else "wasn't"
        return f"It {frame} {('terrible', 'bad', 'good', 'amazing')[d[1] % 4]}. [{digest[:8]}]"
    bets = [d[2] * 2, d[3] * 2, d[4] * 2]
    return (f"Initial Answer: {d[0] % 4}\nProbabilities: 0: {bets[0]}%, 1: {bets[1]}%, 2: {bets[2]}%, 3: {100 - sum(bets)}%\n"
            f"Knowledge: {'yes' if d[1] % 2 else 'no'} [{digest[:8]}]")


UTTERANCES = [f"It {f} {a}" for f in ("was", "wasn't") for a in ("terrible", "bad", "good", "amazing")]
NUMBER_WORDS = ("none", "one", "two", "all three")


def fake_free_text_answer(messages: list, seed: Optional[int]) -> str:
    """A FAKE free-text answer that names its choice without the requested labels or the utterances'
    words, so the deterministic parser cannot settle it and the LLM extractor tier is used."""
    digest = hashlib.sha256(json.dumps([messages, seed], sort_keys=True).encode()).hexdigest()
    d = [int(c, 16) for c in digest[:6]]
    if "It wasn't amazing" in json.dumps(messages):
        return f"Thinking about how they would feel, I would go with choice number {d[0] % 8 + 1} from that list. [{digest[:8]}]"
    bets = [d[2] * 2, d[3] * 2, d[4] * 2]
    sure = "the speaker is certain" if d[1] % 2 else "the speaker is unsure"
    return (f"Hard to say. My guess is {NUMBER_WORDS[d[0] % 4]} of them; my spread is {bets[0]}, {bets[1]}, {bets[2]} and "
            f"{100 - sum(bets)}; and I think {sure}. [{digest[:8]}]")


def fake_extraction(response: str) -> dict:
    """What a FAKE LLM extractor codes from one of :func:`fake_free_text_answer`'s answers (nulls when it finds nothing)."""
    choice = re.search(r"choice number (\d)", response)
    if choice:
        frame, word = UTTERANCES[int(choice.group(1)) - 1].split(" ", 2)[1:]
        return {"Was_Wasnt": frame, "Assessment": word}
    guess = re.search(r"My guess is (none|one|two|all three) of them", response)
    spread = re.search(r"my spread is (\d+), (\d+), (\d+) and (\d+)", response)
    sure = re.search(r"the speaker is (certain|unsure)", response)
    fields = {"Prior_A": NUMBER_WORDS.index(guess.group(1)) if guess else None,
              "Knowledge_A": {"certain": "yes", "unsure": "no"}[sure.group(1)] if sure else None}
    fields |= {f"probability_{i}": int(spread.group(i + 1)) if spread else None for i in range(4)}
    return fields


class FakeOpenAIServer:
    """Start with ``start()`` (background thread) or ``serve_forever()``; ``url`` is its base URL."""

    def __init__(self, model: str = "fake-model", latency_ms: float = 0.0, latency_sigma: float = 0.0,
                 fault_script: Optional[list[str]] = None, hang_s: float = 30.0, rng_seed: int = 0,
                 reasoning: bool = False, port: int = 0, prompt_logprobs: bool = True, healthy_after_s: float = 0.0,
                 completion_faults: Optional[list[str]] = None, free_text: bool = False,
                 chat_template=fake_chat_template, logprob_overrides: Optional[dict] = None, tokenizer=None,
                 trace_words: int = 0, server_trace_field: str = "reasoning_content",
                 latency_every_post: bool = False, record_requests: bool = True, cache_replies: bool = False,
                 healthy_after_polls: int = 0, vllm_echo_top_logprobs: bool = False):
        self.model = model
        self.vllm_echo_top_logprobs = vllm_echo_top_logprobs
        self.cache_replies = cache_replies
        self.hold_after: Optional[int] = None
        self._reply_cache: dict[bytes, bytes] = {}
        self.latency_every_post = latency_every_post
        self.record_requests = record_requests
        self.chat_template = chat_template
        self.tokenizer = tokenizer or FakeTokenizer()
        self.trace_words = trace_words
        self.server_trace_field = server_trace_field
        self.logprob_overrides = dict(logprob_overrides or {})
        self.prompt_tokens_total = 0
        self.tokenize_requests = 0
        self.scoring_requests: list[tuple[str, dict]] = []  # (path, body) of every /tokenize and /v1/completions request
        self.healthy_after_s = healthy_after_s
        self.healthy_after_polls = healthy_after_polls
        self.health_requests = 0
        self._started_at = time.monotonic()
        self.latency_ms = latency_ms
        self.latency_sigma = latency_sigma
        self.fault_script = list(fault_script or [])
        self.completion_faults = list(completion_faults or [])
        self.free_text = free_text
        self.hang_s = hang_s
        self.reasoning = reasoning
        self.prompt_logprobs = prompt_logprobs
        self.completion_requests = 0
        self.port = port
        self.chat_requests = 0
        self.max_in_flight = 0
        self._in_flight = 0
        self._rng = random.Random(rng_seed)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._thread: Optional[threading.Thread] = None
        self._ready = threading.Event()

    @property
    def _pieces(self) -> dict[int, str]:
        """Id -> text of every token the FAKE tokenizer handed out (the default tokenizer only)."""
        return self.tokenizer.pieces

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, headers: Optional[dict] = None) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
                  503: "Service Unavailable"}.get(status, "X")
        head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    def _chat_body(self, request: dict) -> bytes:
        messages = request.get("messages", [])
        if messages and "Reply with one JSON object only" in str(messages[0].get("content")):  # an extraction request
            last = messages[-1]
            response = re.search(r"<<<\n(.*)\n>>>", str(last.get("content")), re.DOTALL) if last.get("role") == "user" else None
            response = response or re.search(r"<<<\n(.*)\n>>>", json.dumps(messages), re.DOTALL)
            answer = json.dumps(fake_extraction(response.group(1) if response else ""))
        elif self.free_text:
            answer = fake_free_text_answer(messages, request.get("seed"))
        else:
            answer = fake_answer(messages, request.get("seed"))
        message, finish, n_tokens = self._reply(answer, request.get("max_tokens"))
        return json.dumps({
            "id": "fake", "object": "chat.completion", "model": request.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": n_tokens, "total_tokens": 100 + n_tokens},
        }).encode()

    def _reply(self, answer: str, max_tokens) -> tuple[dict, str, int]:
        """The message fields, finish reason and generated-token count of a reply ending in ``answer``.

        ``reasoning``: False, no trace; True or 'tags', the model writes '<think>trace</think>';
        'prompt-opened', the prompt opened the block (DeepSeek-R1 distill) so the reply holds only
        '</think>'; 'server', that reply split by the server as vLLM's deepseek_r1 parser does (the
        trace in ``server_trace_field``, ``content`` null when the trace never ended). The
        generated text is cut at ``max_tokens`` FAKE tokens (finish_reason 'length').
        """
        trace = f"Let me think about {answer[:12]}." + " Hmm, wait." * self.trace_words
        generated = {False: answer, True: f"<think>{trace}</think>\n{answer}", "tags": f"<think>{trace}</think>\n{answer}",
                     "prompt-opened": f"{trace}\n</think>\n\n{answer}", "server": f"{trace}\n</think>\n\n{answer}"}[self.reasoning]
        tokens = fake_tokens(generated)
        finish = "stop"
        if self.reasoning and isinstance(max_tokens, int) and len(tokens) > max_tokens:
            generated, finish = "".join(tokens[:max_tokens]), "length"
        n_tokens = min(len(tokens), max_tokens) if isinstance(max_tokens, int) else len(tokens)
        if self.reasoning != "server":
            return {"content": generated}, finish, n_tokens
        reasoning, end, content = generated.partition("</think>")
        return {self.server_trace_field: reasoning, "content": (content or None) if end else None}, finish, n_tokens

    def token_ids(self, text: str) -> list[int]:
        """The server tokenizer's ids for ``text`` (no BOS added; BOS text in ``text`` is the BOS token)."""
        return self.tokenizer.encode(text)

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            return [self.tokenizer.bos_id] + self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and self.tokenizer.piece(t) is not None for t in prompt):
            return prompt
        raise ValueError("each prompt must be text or a non-empty list of known token ids")

    def _completion_choice(self, ids: list[int], index: int, echo: bool, top_n: int) -> dict:
        pieces = [self.tokenizer.piece(t) for t in ids]
        text = "".join(pieces)
        bos = self.tokenizer.piece(self.tokenizer.bos_id)
        skip = len(bos) if ids[0] == self.tokenizer.bos_id else 0  # pseudo log-probabilities depend on the text after BOS
        scored = text[skip:]
        generated = "."
        top = {t: fake_logprob(scored, t) for t in [" ", "\n", "1", "2", "5", " yes", " no", " It", "It", "Yes", "No"][: max(1, top_n)]}
        if not (echo and self.prompt_logprobs):
            return {"index": index, "text": generated, "finish_reason": "length",
                    "logprobs": {"tokens": [generated], "token_logprobs": [fake_logprob(scored, generated)], "text_offset": [len(text)],
                                 "top_logprobs": [top]}}
        offsets, position = [], 0
        for piece in pieces:
            offsets.append(position)
            position += len(piece)
        along = fake_logprobs_along(pieces, skip_first=skip > 0)
        values: list = [None] + [self.logprob_overrides.get(piece, value) for piece, value in zip(pieces[1:], along)]
        prompt_top: list = [None] * len(pieces)
        if self.vllm_echo_top_logprobs:  # as vLLM answers echo + logprobs=1: each prompt token's own entry and the top-1 alternative
            prompt_top = [None] + [{piece: value, ("\n" if piece != "\n" else " "): min(0.0, value + 0.5)}
                                   for piece, value in zip(pieces[1:], values[1:])]
        return {"index": index, "text": text + generated, "finish_reason": "length", "logprobs": {
            "tokens": pieces + [generated], "token_logprobs": values + [fake_logprob(scored, generated)],
            "text_offset": offsets + [position], "top_logprobs": prompt_top + [top]}}

    async def _handle_completion(self, writer: asyncio.StreamWriter, raw: bytes) -> None:
        self.completion_requests += 1
        if raw in self._reply_cache and not self.completion_faults:
            if self.latency_ms:
                await asyncio.sleep(self.latency_ms / 1000.0)
            await self._respond(writer, 200, self._reply_cache[raw])
            return
        request = json.loads(raw or b"{}")
        if self.record_requests:
            self.scoring_requests.append(("/v1/completions", request))
        prompts = request.get("prompt")
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000.0)
        try:
            pieces = [self._prompt_ids(p) for p in prompts or [None]]
        except ValueError as exc:
            await self._respond(writer, 400, json.dumps({"error": {"message": str(exc)}}).encode())
            return
        if any("FAIL-ALWAYS" in self.tokenizer.decode(p) for p in pieces):
            await self._respond(writer, 500, b'{"error": {"message": "fake 500"}}')
            return
        fault = self.completion_faults.pop(0) if self.completion_faults else "ok"
        if fault == "no_choices":
            await self._respond(writer, 200, b'{"object": "text_completion"}')
            return
        choices = [self._completion_choice(p, i, bool(request.get("echo")), int(request.get("logprobs") or 0))
                   for i, p in enumerate(pieces)]
        for choice in choices:
            if fault == "null_logprobs":
                choice["logprobs"] = None
            elif fault == "positive_logprob":
                choice["logprobs"]["token_logprobs"] = [None if v is None else 3.0 for v in choice["logprobs"]["token_logprobs"]]
        n_prompt = sum(len(p) for p in pieces)
        self.prompt_tokens_total += n_prompt
        usage = {"prompt_tokens": n_prompt, "completion_tokens": len(pieces), "prompt_tokens_details": {"cached_tokens": 0}}
        body = {"object": "text_completion", "model": request.get("model"), "choices": choices, "usage": usage}
        encoded = json.dumps(body).encode()
        if self.cache_replies and fault == "ok":
            self._reply_cache[raw] = encoded
        await self._respond(writer, 200, encoded)

    async def _handle_tokenize(self, writer: asyncio.StreamWriter, raw: bytes) -> None:
        self.tokenize_requests += 1
        request = json.loads(raw or b"{}")
        if self.record_requests:
            self.scoring_requests.append(("/tokenize", request))
        if "messages" in request:
            if self.chat_template is None:
                await self._respond(writer, 400, json.dumps({"error": {"message": "As of transformers v4.44, default chat template is no "
                                    "longer allowed, so you must provide a chat template if the tokenizer does not define one."}}).encode())
                return
            text, bos = self.chat_template(request["messages"]), bool(request.get("add_special_tokens", False))
        else:
            text, bos = request.get("prompt", ""), bool(request.get("add_special_tokens", True))
        ids = ([self.tokenizer.bos_id] if bos else []) + self.token_ids(text)
        await self._respond(writer, 200, json.dumps({"tokens": ids, "count": len(ids), "max_model_len": 4096}).encode())

    async def _handle_detokenize(self, writer: asyncio.StreamWriter, raw: bytes) -> None:
        request = json.loads(raw or b"{}")
        text = self.tokenizer.decode(request.get("tokens", []))
        await self._respond(writer, 200, json.dumps({"prompt": text}).encode())

    async def _handle_chat(self, writer: asyncio.StreamWriter, raw: bytes) -> bool:
        """Answer one chat request; return False when the connection must be dropped."""
        self.chat_requests += 1
        number = self.chat_requests
        while self.hold_after is not None and number > self.hold_after:  # held until a test sets hold_after = None
            await asyncio.sleep(0.01)
        request = json.loads(raw or b"{}")
        text = json.dumps(request.get("messages", []))
        fault = self.fault_script.pop(0) if self.fault_script else "ok"
        if "FAIL-ALWAYS" in text:
            fault = "500"
        elif "REJECT" in text:
            fault = "400"
        if self.latency_ms:
            delay = self.latency_ms * (self._rng.lognormvariate(0, self.latency_sigma) if self.latency_sigma else 1.0)
            await asyncio.sleep(delay / 1000.0)
        if fault == "ok":
            await self._respond(writer, 200, self._chat_body(request))
        elif fault in ("500", "503", "400"):
            await self._respond(writer, int(fault), json.dumps({"error": {"message": f"fake {fault}"}}).encode())
        elif fault == "429":
            await self._respond(writer, 429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0"})
        elif fault == "timeout":
            await asyncio.sleep(self.hang_s)
            return False
        elif fault == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        elif fault == "truncated":
            body = self._chat_body(request)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body[: len(body) // 2])
            await writer.drain()
            return False
        elif fault == "malformed":
            await self._respond(writer, 200, b'{"choices": [ this is not json')
        elif fault == "no_choices":
            await self._respond(writer, 200, b'{"object": "chat.completion"}')
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep = True
                if method == "GET" and path == "/v1/models":
                    models = {"object": "list", "data": [{"id": self.model, "object": "model"}]}
                    await self._respond(writer, 200, json.dumps(models).encode())
                elif method == "GET" and path == "/health":
                    self.health_requests += 1
                    healthy = (time.monotonic() - self._started_at >= self.healthy_after_s
                               and self.health_requests > self.healthy_after_polls)
                    await self._respond(writer, 200 if healthy else 503, b"")
                elif method == "GET" and path == "/version":
                    await self._respond(writer, 200, b'{"version": "fake-0.1"}')
                elif method == "POST" and path == "/v1/chat/completions":
                    self._in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self._in_flight)
                    try:
                        keep = await self._handle_chat(writer, body)
                    finally:
                        self._in_flight -= 1
                elif method == "POST" and path == "/v1/completions":
                    await self._handle_completion(writer, body)
                elif method == "POST" and path in ("/tokenize", "/detokenize"):
                    if self.latency_every_post and self.latency_ms:
                        await asyncio.sleep(self.latency_ms / 1000.0)
                    await (self._handle_tokenize if path == "/tokenize" else self._handle_detokenize)(writer, body)
                else:
                    await self._respond(writer, 404, b'{"error": {"message": "not found"}}')
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        self._server.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def start(self) -> "FakeOpenAIServer":
        """Serve in a background thread; returns once the port is open."""
        self._started_at = time.monotonic()
        def target() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread:
            self._thread.join(5)
        if self._loop:
            self._loop.close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-sigma", type=float, default=0.0)
    parser.add_argument("--latency-every-post", action="store_true", help="/tokenize and /detokenize take --latency-ms too")
    parser.add_argument("--cache-replies", action="store_true", help="answer a /v1/completions body seen before from a cache")
    parser.add_argument("--vllm-echo-top-logprobs", action="store_true",
                        help="echo a top_logprobs entry per prompt token, as vLLM does (replies about twice as large)")
    args = parser.parse_args()
    server = FakeOpenAIServer(args.model, args.latency_ms, args.latency_sigma, port=args.port,
                              latency_every_post=args.latency_every_post, record_requests=False, cache_replies=args.cache_replies,
                              vllm_echo_top_logprobs=args.vllm_echo_top_logprobs)
    print(f"fake server on port {args.port}", flush=True)
    asyncio.run(server._serve())


if __name__ == "__main__":
    main()
