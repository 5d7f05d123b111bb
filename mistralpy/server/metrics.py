"""GET /metrics: Prometheus metrics in the text exposition format, in vLLM's style (`mistralpy:` prefix).

Engine gauges and counters are read from one snapshot taken on the engine's loop thread at scrape time; latency
histograms are observed by the loop thread as outputs are delivered.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import threading
from dataclasses import dataclass, field

from ..engine.engine import Engine
from ..spec_decode.speculator import SpecDecodeStats

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
PREFIX = "mistralpy:"


@dataclass
class EngineSnapshot:
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    free_kv_blocks: int = 0
    max_batch_size: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    grammar_compile_seconds: float = 0.0
    grammars_compiled: int = 0
    grammar_cache_hits: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    spec_decode: SpecDecodeStats | None = None  # None where speculation is off

    @classmethod
    def of(cls, engine: Engine, finished: dict[str, int]) -> EngineSnapshot:
        sched, blocks, grammars = engine.scheduler, engine.block_manager, engine.grammar_compiler
        return cls(
            running=len(sched.running),
            waiting=len(sched.waiting),
            kv_cache_usage=blocks.usage,
            free_kv_blocks=blocks.num_free_blocks,
            max_batch_size=sched.stats.max_batch_size,
            prompt_tokens=sched.stats.num_prompt_tokens_computed,
            generation_tokens=sched.stats.num_generation_tokens,
            preemptions=sched.stats.num_preemptions,
            prefix_cache_queries=blocks.stats.queries,
            prefix_cache_hits=blocks.stats.hits,
            grammar_compile_seconds=grammars.compile_seconds,
            grammars_compiled=grammars.num_compiled,
            grammar_cache_hits=grammars.num_cache_hits,
            finished=dict(finished),
            spec_decode=None if engine.speculator is None else dataclasses.replace(engine.speculator.stats),
        )


class Histogram:
    """A Prometheus histogram: cumulative bucket counts, a count and a sum."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS) -> None:
        self.name, self.doc, self.bounds = name, doc, buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, the last one past every bound (+Inf)
        self.sum = 0.0
        self._lock = threading.Lock()  # observed on the engine's loop thread, rendered on the server's

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, value)] += 1
            self.sum += value

    def family(self, label: str) -> Family:
        with self._lock:
            counts, total = list(itertools.accumulate(self.counts)), self.sum
        name = PREFIX + self.name
        bounds = [_number(b) for b in self.bounds] + ["+Inf"]
        buckets = [
            f"{name}_bucket{_labels(label, tag('le', le))} {_number(n)}" for le, n in zip(bounds, counts, strict=True)
        ]
        return Family(name, self.doc, "histogram", [*buckets, f"{name}_count{_labels(label)} {_number(counts[-1])}",
                      f"{name}_sum{_labels(label)} {_number(total)}"])  # fmt: skip


@dataclass
class Family:
    """One metric: its header and its samples (one per model where a server serves several)."""

    name: str
    doc: str
    kind: str
    samples: list[str]


class ServerMetrics:
    """One engine's latency histograms, observed on its loop thread."""

    def __init__(self) -> None:
        self.ttft = Histogram("time_to_first_token_seconds", "Time from arrival to the first generated token.")
        self.itl = Histogram("inter_token_latency_seconds", "Time between two outputs of one request.")
        self.e2e = Histogram("e2e_request_latency_seconds", "Time from arrival to the end of a request.")

    # The AsyncEngine's observer interface (called on its loop thread).
    def on_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def on_next_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def on_finished(self, seconds: float) -> None:
        self.e2e.observe(seconds)

    def families(self, s: EngineSnapshot, label: str = "") -> list[Family]:
        """`label`: 'model_name="..."' where the server serves several models, else none."""
        gauges = [
            ("num_requests_running", "Requests in the running batch.", s.running),
            ("num_requests_waiting", "Requests waiting to be scheduled.", s.waiting),
            ("kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).", s.kv_cache_usage),
            ("num_free_kv_blocks", "KV-cache blocks free.", s.free_kv_blocks),
            ("max_batch_size", "Largest number of requests in one engine step so far.", s.max_batch_size),
            ("prefix_cache_hit_rate", "Prompt tokens served by the prefix cache / prompt tokens looked up.",
             s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0),
        ]  # fmt: skip
        counters = [
            ("prompt_tokens", "Prompt tokens computed (prefix-cache hits excluded).", s.prompt_tokens),
            ("generation_tokens", "Tokens generated.", s.generation_tokens),
            ("num_preemptions", "Requests preempted because KV-cache blocks ran out.", s.preemptions),
            ("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", s.prefix_cache_queries),
            ("prefix_cache_hits", "Prompt tokens found in the prefix cache.", s.prefix_cache_hits),
            ("grammar_compile_seconds", "Time spent compiling structured-output grammars.", s.grammar_compile_seconds),
            ("grammar_compiles", "Structured-output grammars compiled (cache misses).", s.grammars_compiled),
            ("grammar_cache_hits", "Constrained requests whose grammar was already compiled.", s.grammar_cache_hits),
        ]
        out = [_single(PREFIX + name, doc, "gauge", value, label) for name, doc, value in gauges]
        out += [_single(f"{PREFIX}{name}_total", doc, "counter", value, label) for name, doc, value in counters]
        finished = f"{PREFIX}request_finished_total"
        reasons = ("stop", "length", "abort", "error")
        samples = [f"{finished}{_labels(label, tag('reason', r))} {_number(s.finished.get(r, 0))}" for r in reasons]
        out.append(Family(finished, "Finished requests by reason.", "counter", samples))
        if s.spec_decode is not None:
            out += _spec_decode_families(s.spec_decode, label)
        return out + [h.family(label) for h in (self.ttft, self.itl, self.e2e)]

    def render(self, s: EngineSnapshot) -> bytes:
        return render([self.families(s)])


def render(per_engine: list[list[Family]]) -> bytes:
    """The families of one or several engines, in the Prometheus text format (version 0.0.4): each metric's
    header once, then its samples."""
    merged: dict[str, Family] = {}
    for families in per_engine:
        for f in families:
            merged.setdefault(f.name, Family(f.name, f.doc, f.kind, [])).samples.extend(f.samples)
    lines = [line for f in merged.values() for line in (*_header(f.name, f.doc, f.kind), *f.samples)]
    return ("\n".join(lines) + "\n").encode()


def _spec_decode_families(stats: SpecDecodeStats, label: str) -> list[Family]:
    """vLLM's spec_decode_* names; `emitted`: accepted drafts plus the token each verify step draws itself."""
    counters = [
        ("num_drafts", "Verify steps of a request with draft tokens.", stats.num_drafts),
        ("num_draft_tokens", "Draft tokens proposed.", stats.num_draft_tokens),
        ("num_accepted_tokens", "Draft tokens accepted.", stats.num_accepted_tokens),
        ("num_emitted_tokens", "Tokens verify steps produced (accepted drafts + one drawn each).",
         stats.num_emitted_tokens),
    ]  # fmt: skip
    gauges = [
        ("acceptance_rate", "Accepted / proposed draft tokens (0..1).", stats.acceptance_rate),
        ("mean_accepted_length", "Tokens a verify step produced on average.", stats.mean_accepted_length),
    ]
    out = [_single(f"{PREFIX}spec_decode_{n}_total", doc, "counter", v, label) for n, doc, v in counters]
    return out + [_single(f"{PREFIX}spec_decode_{n}", doc, "gauge", v, label) for n, doc, v in gauges]


def _single(name: str, doc: str, kind: str, value: float, label: str) -> Family:
    return Family(name, doc, kind, [f"{name}{_labels(label)} {_number(value)}"])


def tag(key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")  # the format's escapes
    return f'{key}="{escaped}"'


def _labels(*labels: str) -> str:
    given = [label for label in labels if label]
    return "{" + ",".join(given) + "}" if given else ""


def _header(name: str, doc: str, kind: str) -> list[str]:
    return [f"# HELP {name} {doc}", f"# TYPE {name} {kind}"]


def _number(value: float) -> str:
    return repr(float(value))  # Prometheus reads Python's float repr: 3.0, 0.25, 1e-05
