"""Which runner labels this build can run: the one rule, used everywhere labels matter.

A label is ``name[:scheme[:argument]]`` as in forgejo-runner (``internal/pkg/labels``):
the scheme is ``host``, ``docker`` or ``lxc``, and ``docker`` when omitted
(``ubuntu-latest`` alone means a docker image). Forgejo only sees the *names*
(Declare/Register), and offers a runner every job whose ``runs-on`` names are among
them. So a label declared for a scheme no executor here runs makes the runner take
jobs that other runners could have run, only to fail them.

The rule: a label is declared to Forgejo only if an executor of this build runs its
scheme (:data:`RUNNABLE_SCHEMES`: ``host``, the :class:`HostExecutor`). The others
stay in the config file (they will run once a container executor exists) but are
dropped with a reason. Users: the connection loop (what it declares),
``config_warnings`` and ``check-config`` (what is dropped and why), ``register`` and
``import-config`` (what they write but will not declare), and the host executor
itself (which label a job picked).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from scheduler.executor.steps import CONTAINER_NEEDED

#: forgejo-runner's label schemes (``labels.Parse`` refuses any other).
KNOWN_SCHEMES = ("host", "docker", "lxc")
#: The schemes an executor of this build runs.
RUNNABLE_SCHEMES = frozenset({"host"})


@attrs.frozen
class Label:
    """One label as forgejo-runner parses it; ``text`` is what the config says."""

    text: str
    name: str
    scheme: str  # "docker" when the label names none
    argument: str


def parse_label(text: str) -> Label:
    """Split ``name[:scheme[:argument]]`` (scheme ``docker`` when omitted, as there)."""
    parts = text.split(":", 2)
    scheme = parts[1] if len(parts) > 1 and parts[1] else "docker"
    return Label(text, parts[0], scheme, parts[2] if len(parts) > 2 else "")


def label_problem(text: str) -> str | None:
    """Why ``text`` is not a label at all (a config error), or None. As forgejo-runner's
    ``labels.Parse``: an unknown scheme, or ``host`` with an argument."""
    label = parse_label(text)
    if label.scheme not in KNOWN_SCHEMES:
        return (
            f"unknown scheme {label.scheme!r} in label {text!r}; expected "
            f"NAME:host, NAME:docker://IMAGE or NAME:lxc://IMAGE"
        )
    if label.scheme == "host" and label.argument:
        return f"label {text!r}: the host scheme takes no argument (write {label.name}:host)"
    return None


def why_not_runnable(label: Label) -> str | None:
    """None if an executor here runs ``label``, else why not (for logs and check-config)."""
    if label.scheme in RUNNABLE_SCHEMES:
        return None
    if label.scheme in ("docker", "lxc"):
        scheme = label.scheme if ":" in label.text else "no scheme, which means docker"
        return f"{scheme}: {CONTAINER_NEEDED}"
    return f"no executor for the scheme {label.scheme!r}"


@attrs.frozen
class LabelPlan:
    """A connection's labels split into those declared to Forgejo and those dropped."""

    declared: tuple[Label, ...]
    dropped: tuple[tuple[Label, str], ...]  # (label, why)

    @property
    def names(self) -> tuple[str, ...]:
        """What Declare/Register send: the declared labels' names."""
        return tuple(label.name for label in self.declared)

    def describe_dropped(self) -> str:
        """``ubuntu-latest:docker://node:20 (docker: needs ...), ...`` for messages."""
        return ", ".join(f"{label.text} ({why})" for label, why in self.dropped)


def plan_labels(labels: Iterable[str]) -> LabelPlan:
    """The one rule: which of ``labels`` are declared, which dropped and why."""
    declared: list[Label] = []
    dropped: list[tuple[Label, str]] = []
    for text in labels:
        label = parse_label(text)
        why = why_not_runnable(label)
        if why is None:
            declared.append(label)
        else:
            dropped.append((label, why))
    return LabelPlan(tuple(declared), tuple(dropped))
