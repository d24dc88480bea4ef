"""Every exception the service raises on purpose, in one place.

The tree (``outcome_unknown``: whether the request may have had an effect on the
server; the fetch loop keeps a request key exactly when it is true)::

    Exception
    ├── RpcError                  a runner.v1 call failed          (outcome_unknown)
    │   ├── ConnectError          the server answered a Connect error code
    │   │                         (unknown unless the code is in DEFINITE_CODES)
    │   └── TransportFailure      no usable answer                 (always unknown)
    │       ├── RpcTimeout        "timeout: ..."    no answer in time
    │       ├── TransportBroken   "transport: ..."  refused, reset, TLS, DNS...
    │       ├── MalformedAnswer   "malformed: ..."  not a runner.v1 answer
    │       └── OversizedAnswer   "oversized: ..."  over the response size limit
    ├── PoolClosed                the pool grants no more slots (shutting down,
    │                             or the connection is being removed)
    ├── RuntimeError
    │   └── LedgerError           a caller broke the slot ledger's protocol (a bug)
    ├── ValueError
    │   ├── DecodeError           a wire message does not fit the runner.v1 schema
    │   └── SecretFileError       a token file gave no token
    ├── LogsLost                  the server acknowledged fewer log rows than it
    │                             had already acknowledged (the final log gives up)
    ├── ConfigError               the configuration is unusable
    └── OnboardError              ``register`` / ``import-config`` cannot go on

Inside the executor, errors that never leave it: the executor turns each into a
failed step or job with a log line saying why, so they are defined beside the code
that raises them and drawn here only to keep the map whole::

    Exception
    ├── ActionError               executor/actions.py     an action cannot be used
    ├── StepFailed                executor/steps.py       a step failed (message logged)
    ├── ExprFailure               executor/contexts.py    an expression cannot be evaluated
    └── ValueError
        ├── WorkflowError         executor/workflow.py    not a runnable one-job workflow
        ├── HashFilesError        executor/hashfiles.py   a bad ``hashFiles`` option
        └── ExpressionError       executor/expr/errors.py syntax or evaluation error

And one in the configuration parser, which turns it into a ConfigError naming the key::

    ValueError
    └── EnvFileError              config/envfile.py       an env_file line is not NAME=value

The simulator (``scheduler/sim/``) is the server's side of the wire and keeps its
own errors. ``tests/test_errors.py`` fails when an exception class of the service
is missing from these drawings.

Why types and not a ``kind`` string: callers ask ``isinstance`` (``except RpcTimeout``)
and a typo is an import error, not a silently wrong branch. The messages are what an
operator reads, so they are part of the behaviour: each failure keeps its prefix.
"""

from __future__ import annotations

from typing import ClassVar

# Codes that prove the server did not act on the request. Everything else
# (unavailable, internal, unknown, deadline_exceeded, resource_exhausted, aborted...)
# may have happened after the server assigned tasks, so its outcome is unknown.
DEFINITE_CODES = frozenset(
    {
        "unauthenticated",
        "permission_denied",
        "invalid_argument",
        "unimplemented",
        "not_found",
        "failed_precondition",
        "out_of_range",
    }
)


# --- RPC --------------------------------------------------------------------------------


class RpcError(Exception):
    """Base of every failed RPC."""

    outcome_unknown: bool = True


class ConnectError(RpcError):
    """The server answered with a Connect error ``code``."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.http_status = http_status
        self.outcome_unknown = code not in DEFINITE_CODES


class TransportFailure(RpcError):
    """No usable answer: the request may or may not have been processed.

    Raised only as one of its subclasses; the message is ``"<prefix>: <detail>"``.
    """

    prefix: ClassVar[str] = "transport"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.prefix}: {detail}")
        self.detail = detail


class RpcTimeout(TransportFailure):
    """No answer within the call's time limit."""

    prefix = "timeout"


class TransportBroken(TransportFailure):
    """The connection failed: refused, reset, TLS, name resolution..."""

    prefix = "transport"


class MalformedAnswer(TransportFailure):
    """An answer arrived but is not a runner.v1 answer (content type, JSON, schema)."""

    prefix = "malformed"


class OversizedAnswer(TransportFailure):
    """The answer is larger than the client's response size limit."""

    prefix = "oversized"


# --- slots ------------------------------------------------------------------------------


class PoolClosed(Exception):
    """The service is shutting down: no more grants."""


class LedgerError(RuntimeError):
    """A caller broke the ledger's protocol (a bug, never a runtime condition)."""


# --- input: wire, files, configuration, onboarding --------------------------------------


class DecodeError(ValueError):
    """A message from the wire does not fit the runner.v1 schema."""


class SecretFileError(ValueError):
    """Why the file gave no token, starting with the file's name (never its content)."""


class LogsLost(Exception):
    """The server acknowledged fewer log rows than it had already acknowledged: rows
    it held are gone, so the final UpdateLog stops resending (the state still goes)."""


class ConfigError(Exception):
    """The configuration is unusable; the message already names file, key and expectation,
    so callers print it as is (no traceback) and exit."""


class OnboardError(Exception):
    """The command cannot go on; the message names the file, key or server at fault
    and is printed as is (no traceback)."""
