"""GET /metrics: Prometheus metrics from prometheus_client, in vLLM's style (`mistralpy:` prefix).

Engine gauges and counters are read from one snapshot taken on the engine's loop thread at scrape time; latency
histograms are observed by the loop thread as outputs are delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..engine.engine import Engine

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
    finished: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, engine: Engine, finished: dict[str, int]) -> EngineSnapshot:
        sched, blocks = engine.scheduler, engine.block_manager
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
            finished=dict(finished),
        )


class ServerMetrics:
    """Owns a private registry (several servers in one process never share metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.snapshot = EngineSnapshot()
        self.registry.register(_SnapshotCollector(self))
        self.ttft = self._histogram("time_to_first_token_seconds", "Time from arrival to the first generated token.")
        self.itl = self._histogram("inter_token_latency_seconds", "Time between two outputs of one request.")
        self.e2e = self._histogram("e2e_request_latency_seconds", "Time from arrival to the end of a request.")

    def _histogram(self, name: str, doc: str) -> Histogram:
        return Histogram(PREFIX + name, doc, buckets=_LATENCY_BUCKETS, registry=self.registry)

    # The AsyncEngine's observer interface (called on its loop thread; prometheus_client is thread-safe).
    def on_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def on_next_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def on_finished(self, seconds: float) -> None:
        self.e2e.observe(seconds)

    def render(self, snapshot: EngineSnapshot) -> bytes:
        self.snapshot = snapshot
        return generate_latest(self.registry)


class _SnapshotCollector:
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        s = self.metrics.snapshot
        gauges = [
            ("num_requests_running", "Requests in the running batch.", s.running),
            ("num_requests_waiting", "Requests waiting to be scheduled.", s.waiting),
            ("kv_cache_usage_perc", "Fraction of KV-cache blocks in use (0..1).", s.kv_cache_usage),
            ("num_free_kv_blocks", "KV-cache blocks free.", s.free_kv_blocks),
            ("max_batch_size", "Largest number of requests in one engine step so far.", s.max_batch_size),
            ("prefix_cache_hit_rate", "Prompt tokens served by the prefix cache / prompt tokens looked up.",
             s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0),
        ]  # fmt: skip
        for name, doc, value in gauges:
            yield GaugeMetricFamily(PREFIX + name, doc, value=value)
        counters = [
            ("prompt_tokens", "Prompt tokens computed (prefix-cache hits excluded).", s.prompt_tokens),
            ("generation_tokens", "Tokens generated.", s.generation_tokens),
            ("num_preemptions", "Requests preempted because KV-cache blocks ran out.", s.preemptions),
            ("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", s.prefix_cache_queries),
            ("prefix_cache_hits", "Prompt tokens found in the prefix cache.", s.prefix_cache_hits),
        ]
        for name, doc, value in counters:
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        finished = CounterMetricFamily(PREFIX + "request_finished", "Finished requests by reason.", labels=["reason"])
        for reason in ("stop", "length", "abort"):
            finished.add_metric([reason], s.finished.get(reason, 0))
        yield finished
