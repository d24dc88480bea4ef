"""Every Prometheus metric of the service, in one private registry.

Why one class that owns everything:

* Tests (and a config reload) build the service more than once per process, so the
  metrics live in their own ``CollectorRegistry``; the process-global ``REGISTRY``
  would raise ``Duplicated timeseries`` on the second construction.
* Every per-connection series is created at 0 as soon as the connection is known
  (``add_connection``), including every ``outcome`` and ``result`` label value. A
  series that appears only on its first increment breaks ``rate()`` over that first
  step and makes "absent" alerts fire on a healthy service.
* The only label values are connection names (from the config, a handful),
  fetch outcomes and task results (the closed tuples below). Task ids, repositories,
  request keys and tokens never become labels: they are unbounded or secret.

``_created`` series: prometheus_client only offers a process-global switch
(``disable_created_metrics()``), which would also change other registries in the
same process. Instead each metric is registered through a small wrapper collector
that drops the ``*_created`` samples, which affects this registry alone.

Names follow shared/reference/anchors.md §4 and §5.2 (prefix ``forgejo_scheduler_``,
base units, ``_total`` on counters, ``build_info`` with value 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from scheduler.config import Share
from scheduler.slots import LedgerStatistics

PREFIX: Final = "forgejo_scheduler"

FETCH_OUTCOMES = ("tasks", "empty", "error", "timeout", "unauthorized", "throttled")
TASK_RESULTS = ("success", "failure", "cancelled", "skipped", "unknown")

# Slot waits range from "a slot was free" (sub-millisecond, the grant happens in the
# same scheduler step) to "every slot is busy with hour-long jobs".
SLOT_WAIT_BUCKETS: Final = (
    0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
# One FetchTask round trip: milliseconds on a healthy LAN, up to the fetch timeout
# (the reference uses at most 60 s) when a server hangs.
FETCH_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
# CI jobs: a one-second "echo" up to Forgejo's default 3 h job timeout and beyond (6 h).
TASK_DURATION_BUCKETS: Final = (
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
    3600.0, 7200.0, 10800.0, 14400.0, 21600.0,
)  # fmt: skip

_CREATED_TYPES: Final = frozenset({"counter", "histogram", "summary"})


class _WithoutCreated:
    """Registers one metric object and drops its ``<name>_created`` samples.

    ``describe`` is delegated so the registry still knows the metric's names
    (duplicate detection and ``?name[]=`` filtering keep working).
    """

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric

    def describe(self) -> Iterable[Metric]:
        return self._metric.describe()

    def collect(self) -> Iterable[Metric]:
        for family in self._metric.collect():
            if family.type in _CREATED_TYPES:
                created = family.name + "_created"
                family.samples = [s for s in family.samples if s.name != created]
            yield family


@attrs.frozen
class ConnectionMetrics:
    """One connection's series, the ``.labels(name)`` children created once.

    Held by whoever writes them (the connection loop, the pool's export), so a
    write is ``m.fetch_retries.inc()`` and no call site spells the label again.
    """

    fetch_requests: Mapping[str, Counter]  # by outcome (FETCH_OUTCOMES)
    fetch_duration: Histogram
    fetch_retries: Counter
    request_keys_reused: Counter
    request_key_unresolved_since: Gauge
    request_key_rotations: Counter
    tasks_received: Counter
    tasks_recovered: Counter
    tasks_rejected: Counter
    tasks_running: Gauge
    tasks_finished: Mapping[str, Counter]  # by result (TASK_RESULTS)
    task_duration: Histogram
    up: Gauge
    last_successful_fetch: Gauge
    slots_held: Gauge
    slots_reserved: Gauge
    fair_share: Gauge
    waiting_for_slot: Gauge
    slot_wait: Histogram
    weight: Gauge
    min_slots: Gauge
    max_slots: Gauge


class Metrics:
    """All metrics of one service, in its own CollectorRegistry (never the global one).

    Attributes are the prometheus_client metric objects. A connection's series are
    reached through its :class:`ConnectionMetrics` (``add_connection`` returns it,
    ``connection(name)`` finds it): ``metrics.connection("home").slots_held.set(3)``.
    Gauges that mirror state (held, reserved, fair share, running, up) are *set* by
    their owner from the authoritative state (the slot gauges from a ledger snapshot,
    :meth:`export_slots`) rather than inc/dec'd, so they cannot drift.
    """

    def __init__(self, *, capacity: int, connections: Sequence[str], version: str) -> None:
        self.registry = CollectorRegistry()
        self._connections: dict[str, ConnectionMetrics] = {}
        self._per_connection: list[MetricWrapperBase] = []

        c = ("connection",)

        # --- capacity and fair share ---------------------------------------------
        self.capacity_slots = self._gauge(
            "capacity_slots", "Runner slots this process may fill at once (config capacity)."
        )
        self.slots_held = self._gauge(
            "slots_held", "Slots held by a connection: running tasks plus reserved slots.", c
        )
        self.slots_reserved = self._gauge(
            "slots_reserved",
            "Slots granted to a connection whose fetch has not resolved yet (in doubt).",
            c,
        )
        self.fair_share_slots = self._gauge(
            "fair_share_slots",
            "Weighted max-min share of the capacity computed for a connection now.",
            c,
        )
        self.slot_wait_seconds = self._histogram(
            "slot_wait_seconds",
            "Time from a connection becoming hungry to being granted a slot.",
            SLOT_WAIT_BUCKETS,
        )
        self.connection_waiting_for_slot = self._gauge(
            "connection_waiting_for_slot",
            "1 while the connection wants a slot to fetch with and none is free (unmet demand).",
            c,
        )
        self.fairness_jain_index = self._gauge(
            "fairness_jain_index",
            "Jain's fairness index over hungry connections, weighted by fair share (1/n..1).",
        )

        # --- fetch ---------------------------------------------------------------
        self.fetch_requests_total = self._counter(
            "fetch_requests_total",
            "FetchTask calls by outcome (tasks, empty, error, timeout, unauthorized, throttled).",
            ("connection", "outcome"),
        )
        self.fetch_duration_seconds = self._histogram(
            "fetch_duration_seconds",
            "Duration of one FetchTask call, whatever its outcome.",
            FETCH_DURATION_BUCKETS,
        )
        self.fetch_retries_total = self._counter(
            "fetch_retries_total", "FetchTask calls that retried an unresolved request key.", c
        )
        self.request_keys_reused_total = self._counter(
            "request_keys_reused_total",
            "FetchTask calls sent with a request key already used (in-doubt fetch resolved).",
            c,
        )
        self.request_key_unresolved_since_timestamp_seconds = self._gauge(
            "request_key_unresolved_since_timestamp_seconds",
            "Unix time since which the current request key has been in doubt (first "
            "unknown outcome, or a restart with a pending key); 0 = no key in doubt.",
            c,
        )
        self.request_key_rotations_total = self._counter(
            "request_key_rotations_total", "Request keys replaced after an answer with tasks.", c
        )

        # --- tasks ---------------------------------------------------------------
        self.tasks_received_total = self._counter(
            "tasks_received_total", "Tasks received from FetchTask.", c
        )
        self.tasks_recovered_total = self._counter(
            "tasks_recovered_total", "Tasks that arrived on a reused (retried) request key.", c
        )
        self.tasks_rejected_total = self._counter(
            "tasks_rejected_total",
            "Tasks beyond the slots reserved for the fetch, reported failed at once.",
            c,
        )
        self.tasks_running = self._gauge("tasks_running", "Tasks executing now.", c)
        self.tasks_finished_total = self._counter(
            "tasks_finished_total",
            "Tasks whose final state was reported, by result.",
            ("connection", "result"),
        )
        self.task_duration_seconds = self._histogram(
            "task_duration_seconds",
            "Wall-clock duration of a task, from receipt to its final report.",
            TASK_DURATION_BUCKETS,
        )

        # --- health and configuration -------------------------------------------
        self.connection_up = self._gauge(
            "connection_up", "1 if the last exchange with the Forgejo server succeeded.", c
        )
        self.last_successful_fetch_timestamp_seconds = self._gauge(
            "last_successful_fetch_timestamp_seconds",
            "Unix time of the last FetchTask that got an answer (0 = never).",
            c,
        )
        self.connection_weight = self._gauge(
            "connection_weight", "Configured fair-share weight.", c
        )
        self.connection_min_slots = self._gauge(
            "connection_min_slots", "Configured guaranteed slots.", c
        )
        self.connection_max_slots = self._gauge("connection_max_slots", "Configured slot cap.", c)
        self.build_info = self._gauge(
            "build_info", "Build information; the value is always 1.", ("version",)
        )

        self.capacity_slots.set(capacity)
        self.fairness_jain_index.set(1)  # no contention yet: perfectly fair by definition
        self.build_info.labels(version=version).set(1)
        for name in connections:
            self.add_connection(name, Share(1, 0, capacity))

    # --- per-connection lifecycle -----------------------------------------------

    def add_connection(self, name: str, share: Share) -> ConnectionMetrics:
        """Create every per-connection series at 0 and set the config gauges.

        All ``outcome`` and ``result`` label values are created too. Idempotent:
        calling it again for a known connection only updates the three config gauges;
        counters and state gauges keep their values. Returns its children.
        """
        children = self._connections.get(name)
        if children is None:
            for metric in self._per_connection:  # every series, even one without a child
                if metric is self.fetch_requests_total:
                    for outcome in FETCH_OUTCOMES:
                        metric.labels(connection=name, outcome=outcome)
                elif metric is self.tasks_finished_total:
                    for result in TASK_RESULTS:
                        metric.labels(connection=name, result=result)
                else:
                    metric.labels(connection=name)
            children = self._children(name)
            self._connections[name] = children
        children.weight.set(share.weight)
        children.min_slots.set(share.min_slots)
        if share.max_slots is not None:
            children.max_slots.set(share.max_slots)
        return children

    def connection(self, name: str) -> ConnectionMetrics:
        """The children of a connection added with :meth:`add_connection`."""
        return self._connections[name]

    def _children(self, name: str) -> ConnectionMetrics:
        return ConnectionMetrics(
            fetch_requests={
                o: self.fetch_requests_total.labels(connection=name, outcome=o)
                for o in FETCH_OUTCOMES
            },
            fetch_duration=self.fetch_duration_seconds.labels(connection=name),
            fetch_retries=self.fetch_retries_total.labels(connection=name),
            request_keys_reused=self.request_keys_reused_total.labels(connection=name),
            request_key_unresolved_since=(
                self.request_key_unresolved_since_timestamp_seconds.labels(connection=name)
            ),
            request_key_rotations=self.request_key_rotations_total.labels(connection=name),
            tasks_received=self.tasks_received_total.labels(connection=name),
            tasks_recovered=self.tasks_recovered_total.labels(connection=name),
            tasks_rejected=self.tasks_rejected_total.labels(connection=name),
            tasks_running=self.tasks_running.labels(connection=name),
            tasks_finished={
                r: self.tasks_finished_total.labels(connection=name, result=r)
                for r in TASK_RESULTS
            },
            task_duration=self.task_duration_seconds.labels(connection=name),
            up=self.connection_up.labels(connection=name),
            last_successful_fetch=(
                self.last_successful_fetch_timestamp_seconds.labels(connection=name)
            ),
            slots_held=self.slots_held.labels(connection=name),
            slots_reserved=self.slots_reserved.labels(connection=name),
            fair_share=self.fair_share_slots.labels(connection=name),
            waiting_for_slot=self.connection_waiting_for_slot.labels(connection=name),
            slot_wait=self.slot_wait_seconds.labels(connection=name),
            weight=self.connection_weight.labels(connection=name),
            min_slots=self.connection_min_slots.labels(connection=name),
            max_slots=self.connection_max_slots.labels(connection=name),
        )

    def export_slots(self, slots: LedgerStatistics) -> None:
        """Set the slot gauges from a ledger snapshot (after every change of the ledger)."""
        for name, s in slots.connections.items():
            children = self._connections.get(name)
            if children is None:
                continue  # a ledger without metrics for it (only in tests)
            children.slots_held.set(s.held)
            children.slots_reserved.set(s.reserved)
            children.fair_share.set(s.fair_share)
            children.waiting_for_slot.set(1 if s.hungry else 0)
        self.fairness_jain_index.set(slots.jain_index)

    def remove_connection(self, name: str) -> None:
        """Drop every series of that connection (a reload removed it from the config).

        Without this a removed connection would keep exporting its last gauge values
        forever, e.g. a stale ``connection_up 0`` firing alerts. Unknown names are a no-op.
        """
        if name not in self._connections:
            return
        for metric in self._per_connection:
            if metric is self.fetch_requests_total:
                keys: list[tuple[str, ...]] = [(name, o) for o in FETCH_OUTCOMES]
            elif metric is self.tasks_finished_total:
                keys = [(name, r) for r in TASK_RESULTS]
            else:
                keys = [(name,)]
            for key in keys:
                try:
                    metric.remove(*key)
                except KeyError:
                    pass
        del self._connections[name]

    @property
    def connections(self) -> frozenset[str]:
        """Connection names whose series currently exist."""
        return frozenset(self._connections)

    # --- construction helpers ----------------------------------------------------

    def _register(self, metric: MetricWrapperBase, labels: Sequence[str]) -> None:
        collector: Collector = _WithoutCreated(metric)
        self.registry.register(collector)
        if "connection" in labels:
            self._per_connection.append(metric)

    def _gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        g = Gauge(name, doc, labels, namespace=PREFIX, registry=None)
        self._register(g, labels)
        return g

    def _counter(self, name: str, doc: str, labels: Sequence[str]) -> Counter:
        cnt = Counter(name, doc, labels, namespace=PREFIX, registry=None)
        self._register(cnt, labels)
        return cnt

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> Histogram:
        labels = ("connection",)
        h = Histogram(name, doc, labels, namespace=PREFIX, buckets=buckets, registry=None)
        self._register(h, labels)
        return h
