"""The soak's clients: each loops until the deadline, drawing what to send next (a valid chat or completion, streamed
or not; a hang-up mid-stream or before the answer; a bad input; a request without the API key; a 1 MB body), and
records what came back in a `Tally`."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from .soak_requests import BadInput, ValidRequest, answer_texts, big_prompt_body, chunk_text, padded_body

# Shares of the requests, drawn per request; the rest are valid requests answered in full.
MID_STREAM_HANGUP, EARLY_HANGUP, BAD_INPUT, NO_KEY, BIG_BODY = 0.15, 0.05, 0.10, 0.02, 0.005
# The first request of these clients is the named fault, so that each is tried even in a short run.
FIRST = ("big_prompt", "padded_body", "no_key", "wrong_key", "early_hangup", "mid_stream")
MAX_FAILURES_KEPT = 50


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)  # by kind, e.g. "chat/stream", "bad_input"
    faults: Counter[str] = field(default_factory=Counter)  # hang-ups, missing keys, 1 MB bodies
    bad_inputs: Counter[str] = field(default_factory=Counter)  # by name
    statuses: Counter[str] = field(default_factory=Counter)  # as the clients saw them ("none": hung up first)
    texts: dict[str, Counter[tuple[str, ...]]] = field(default_factory=dict)  # request key -> its answers' texts
    answered: int = 0  # valid requests answered in full (hang-ups that came too late included)
    unanswered: int = 0  # valid requests without a complete answer, not hung up on purpose
    wrong_errors: int = 0  # bad inputs answered with another status than expected, or without an error body
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(what)

    def answer(self, request: ValidRequest, texts: list[str]) -> None:
        self.answered += 1
        self.texts.setdefault(request.key, Counter())[tuple(texts)] += 1


@dataclass
class Clients:
    """What every client shares: the server, one HTTP client, the pool and the catalogue, the tally."""

    url: str
    headers: dict[str, str]
    http: httpx.AsyncClient
    pool: list[ValidRequest]
    bad: list[BadInput]
    model: str
    timeout: float
    tally: Tally = field(default_factory=Tally)

    async def run(self, num_clients: int, seconds: float, seed: int) -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(self._client(i, random.Random(seed * 100_003 + i), deadline) for i in range(num_clients))
        )

    async def _client(self, index: int, rng: random.Random, deadline: float) -> None:
        first = FIRST[index] if index < len(FIRST) else None
        while time.monotonic() < deadline:
            await self._one(first or self._draw(rng), rng)
            first = None

    @staticmethod
    def _draw(rng: random.Random) -> str:
        u = rng.random()
        for kind, share in (("mid_stream", MID_STREAM_HANGUP), ("early_hangup", EARLY_HANGUP),
                            ("bad_input", BAD_INPUT), ("no_key", NO_KEY / 2), ("wrong_key", NO_KEY / 2),
                            ("big_prompt", BIG_BODY / 2), ("padded_body", BIG_BODY / 2)):  # fmt: skip
            if u < share:
                return kind
            u -= share
        return "valid"

    async def _one(self, kind: str, rng: random.Random) -> None:
        request = rng.choice(self.pool)
        try:
            if kind == "valid":
                stream = rng.random() < 0.5
                self.tally.requests[f"{request.key.split('/')[0]}/{'stream' if stream else 'json'}"] += 1
                await self._valid(request, stream, hang_up_after=None)
            elif kind == "mid_stream":
                self._count_fault("mid_stream_hangup")
                await self._valid(request, True, hang_up_after=rng.randint(1, max(1, request.body["max_tokens"] // 2)))
            elif kind == "early_hangup":
                self._count_fault("early_hangup")
                await self._early_hangup(request, rng.random() < 0.5, rng.uniform(0.01, 0.5))
            elif kind == "bad_input":
                await self._bad_input(rng.choice(self.bad))
            elif kind in ("no_key", "wrong_key"):
                await self._no_key(request, kind)
            elif kind == "big_prompt":
                self._count_fault("big_body_prompt")
                await self._expect_error(BadInput("big_prompt", "/v1/completions", big_prompt_body(self.model)))
            else:
                self._count_fault("big_body_padded")
                await self._valid(request, False, None, content=padded_body(request))
        except (httpx.HTTPError, OSError, asyncio.TimeoutError, ValueError, KeyError) as e:
            self.tally.statuses["none"] += 1
            if kind in ("valid", "mid_stream", "padded_body"):
                self.tally.unanswered += 1
            self.tally.fail(f"{kind} {request.key}: {type(e).__name__}: {e}")

    def _count_fault(self, name: str) -> None:
        self.tally.requests["fault"] += 1
        self.tally.faults[name] += 1

    async def _valid(
        self, request: ValidRequest, stream: bool, hang_up_after: int | None, content: bytes | None = None
    ) -> None:
        body = content or json.dumps(request.json(stream)).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        async with self.http.stream("POST", self.url + request.path, content=body, headers=headers) as r:
            self.tally.statuses[str(r.status_code)] += 1
            if r.status_code != 200:
                self.tally.unanswered += 1
                self.tally.fail(f"{request.key}: status {r.status_code}: {(await r.aread())[:300]!r}")
            elif not stream:
                self._record(request, json.loads(await r.aread()))
            else:
                await self._read_stream(request, r, hang_up_after)

    def _record(self, request: ValidRequest, answer: dict) -> None:
        reasons = {c.get("finish_reason") for c in answer["choices"]}
        if not reasons <= {"stop", "length"}:
            self.tally.unanswered += 1
            self.tally.fail(f"{request.key}: finish reasons {reasons}")
            return
        self.tally.answer(request, answer_texts(request.path, answer))

    async def _read_stream(self, request: ValidRequest, r: httpx.Response, hang_up_after: int | None) -> None:
        texts: dict[int, list[str]] = {}
        finished: set[int] = set()
        events = 0
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                if finished != set(texts) or not texts:
                    self.tally.unanswered += 1
                    self.tally.fail(f"{request.key}: stream ended without a finish reason for every choice")
                    return
                self.tally.answer(request, ["".join(texts[i]) for i in sorted(texts)])
                return
            chunk = json.loads(line[6:])
            if "error" in chunk:
                self.tally.unanswered += 1
                self.tally.fail(f"{request.key}: error event {chunk['error']}")
                return
            for choice in chunk["choices"]:
                texts.setdefault(choice["index"], []).append(chunk_text(request.path, choice))
                if choice.get("finish_reason") is not None:
                    finished.add(choice["index"])
            events += 1
            if hang_up_after is not None and events >= hang_up_after:
                return  # leaving the block closes the connection with the answer unread
        self.tally.unanswered += 1
        self.tally.fail(f"{request.key}: stream closed before [DONE]")

    async def _early_hangup(self, request: ValidRequest, stream: bool, after: float) -> None:
        try:
            await asyncio.wait_for(self._valid(request, stream, None), after)
        except asyncio.TimeoutError:
            self.tally.statuses["none"] += 1  # gone before the answer: the server logs it as 499

    async def _bad_input(self, bad: BadInput) -> None:
        self.tally.requests["bad_input"] += 1
        self.tally.bad_inputs[bad.name] += 1
        if bad.announce is not None:
            status, body = await self._announce_only(bad)
            self._check_error(bad, status, body)
        else:
            await self._expect_error(bad)

    async def _no_key(self, request: ValidRequest, kind: str) -> None:
        self._count_fault(kind)
        headers = {"Authorization": "Bearer sk-wrong"} if kind == "wrong_key" else {}
        r = await self.http.post(self.url + request.path, json=request.json(False), headers=headers)
        self._check_error(BadInput(kind, request.path, expect=401), r.status_code, r.content)

    async def _expect_error(self, bad: BadInput) -> None:
        headers = {**self.headers, "Content-Type": bad.content_type}
        content = bad.content if bad.method == "POST" else None
        r = await self.http.request(bad.method, self.url + bad.path, content=content, headers=headers)
        self._check_error(bad, r.status_code, r.content)

    def _check_error(self, bad: BadInput, status: int, body: bytes) -> None:
        self.tally.statuses[str(status)] += 1
        if status != bad.expect:
            self.tally.wrong_errors += 1
            self.tally.fail(f"{bad.name}: status {status}, expected {bad.expect}: {body[:300]!r}")
            return
        try:
            error = json.loads(body)["error"]
            ok = isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self.tally.wrong_errors += 1
            self.tally.fail(f"{bad.name}: {status} without an OpenAI error body: {body[:300]!r}")

    async def _announce_only(self, bad: BadInput) -> tuple[int, bytes]:
        """Headers announcing bad.announce body bytes, no body: the server must answer at once and close."""
        host, port = self.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            auth = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            head = f"POST {bad.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}"
            writer.write(f"{head}Content-Length: {bad.announce}\r\n\r\n".encode())
            response = await asyncio.wait_for(reader.read(-1), self.timeout)
        finally:
            writer.close()
        header, _, body = response.partition(b"\r\n\r\n")
        return int(header.split()[1]), body
