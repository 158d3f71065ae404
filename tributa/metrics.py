"""Prometheus metrics for the oracle and the agents, each process with its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 120, 300)


class OracleMetrics:
    def __init__(self, task_counts=None) -> None:
        self.registry = CollectorRegistry()
        self.rpc_errors = Counter(
            "tributa_oracle_rpc_errors_total",
            "Worker passes that failed on an RPC or chain error",
            registry=self.registry,
        )
        self.gas_spent = Counter(
            "tributa_oracle_gas_spent_total",
            "Gas used by the oracle's transactions",
            ["purpose"],
            registry=self.registry,
        )
        self.slashes = Counter("tributa_oracle_slashes_total", "Agents slashed in settlements", registry=self.registry)
        self.settled = Counter(
            "tributa_oracle_settled_total", "Tasks settled, by verdict source", ["source"], registry=self.registry
        )
        self.leases = Counter("tributa_oracle_jobs_leased_total", "Jobs leased to agents", registry=self.registry)
        self.latency = Histogram(
            "tributa_oracle_task_latency_seconds",
            "From ingestion of TaskPosted to the settlement receipt",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        if task_counts is not None:
            self.registry.register(_TaskStateCollector(task_counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _TaskStateCollector:
    """Tasks by state, read from the oracle's database at scrape time (never stale)."""

    def __init__(self, task_counts) -> None:
        self.task_counts = task_counts

    def collect(self):
        family = GaugeMetricFamily("tributa_oracle_tasks", "Tasks known to the oracle, by state", labels=["state"])
        for state, count in sorted(self.task_counts().items()):
            family.add_metric([state], count)
        yield family


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


# The oracle's worker runs in one process and its job API (which serves /metrics) in another:
# the worker's updates travel to the API process over a queue and are applied there.
RELAYED_METRICS = ("rpc_errors", "gas_spent", "slashes", "settled", "latency")


class RelayedMetrics:
    """The worker process's stand-in for OracleMetrics: `.settled.labels("majority").inc()` etc.
    put one small message on the queue, never blocking the worker."""

    def __init__(self, queue) -> None:
        self._queue = [queue]  # a box: every metric handed out follows `retarget`
        for name in RELAYED_METRICS:
            setattr(self, name, _RelayedMetric(self._queue, name, ()))

    def retarget(self, queue) -> None:
        """Relay to `queue` from now on: a restarted API process reads a fresh one (the killed
        one may have died holding the old queue's read lock)."""
        self._queue[0] = queue


class _RelayedMetric:
    def __init__(self, box: list, name: str, labels: tuple[str, ...]) -> None:
        self._box, self._name, self._labels = box, name, labels

    def labels(self, *values: str) -> _RelayedMetric:
        return _RelayedMetric(self._box, self._name, tuple(str(v) for v in values))

    def inc(self, amount: float = 1) -> None:
        self._box[0].put((self._name, self._labels, "inc", amount))

    def observe(self, value: float) -> None:
        self._box[0].put((self._name, self._labels, "observe", value))


def apply_relayed(metrics: OracleMetrics, queue) -> None:
    """Apply relayed updates until the queue yields None (run it in a thread of the API process)."""
    while (message := queue.get()) is not None:
        name, labels, op, amount = message
        if name not in RELAYED_METRICS or op not in ("inc", "observe"):
            continue
        metric = getattr(metrics, name)
        getattr(metric.labels(*labels) if labels else metric, op)(amount)
