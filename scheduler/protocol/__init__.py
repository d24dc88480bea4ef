"""The only code that knows the runner.v1 wire: messages, their JSON mapping, the client.

Its failures (``RpcError`` and below) live in :mod:`scheduler.errors`.
"""

from scheduler.protocol.client import RunnerClient, ssl_context
from scheduler.protocol.messages import (
    FetchTaskResponse,
    LogRow,
    Result,
    Runner,
    StepState,
    Task,
    TaskNeed,
    TaskState,
    UpdateTaskResponse,
)

__all__ = [
    "FetchTaskResponse",
    "LogRow",
    "Result",
    "Runner",
    "RunnerClient",
    "StepState",
    "Task",
    "TaskNeed",
    "TaskState",
    "UpdateTaskResponse",
    "ssl_context",
]
