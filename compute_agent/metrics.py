"""The compute agent's Prometheus metrics, in the agent process's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tributa.metrics import LATENCY_BUCKETS


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter("tributa_agent_jobs_total", "Jobs run, by outcome", ["outcome"], registry=self.registry)
        self.job_seconds = Histogram(
            "tributa_agent_job_seconds",
            "Wall time per job (fetch, run, sign)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.poll_errors = Counter(
            "tributa_agent_poll_errors_total", "Polls that failed to reach the oracle", registry=self.registry
        )
        self.slashes = Counter(
            "tributa_agent_slashes_total", "Times the escrow slashed this agent", registry=self.registry
        )
        self.slashed_wei = Counter(
            "tributa_agent_slashed_wei_total", "Stake the escrow slashed from this agent", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
