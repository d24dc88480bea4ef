"""Reading the service's own metrics, as a scrape would see them."""

from __future__ import annotations

from scheduler.service import Service


def metric(service: Service, name: str, **labels: str) -> float:
    """The sample ``forgejo_scheduler_<name>{labels}``; 0 when it has none yet."""
    value = service.metrics.registry.get_sample_value(f"forgejo_scheduler_{name}", labels)
    return value or 0.0
