"""The only code that knows the runner.v1 wire: messages, their JSON mapping, the client."""

from scheduler.protocol.client import (
    DEFINITE_CODES,
    ConnectError,
    RpcError,
    RunnerClient,
    TransportFailure,
    ssl_context,
)
from scheduler.protocol.messages import (
    DecodeError,
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
    "DEFINITE_CODES",
    "ConnectError",
    "DecodeError",
    "FetchTaskResponse",
    "LogRow",
    "Result",
    "RpcError",
    "Runner",
    "RunnerClient",
    "StepState",
    "Task",
    "TaskNeed",
    "TaskState",
    "TransportFailure",
    "UpdateTaskResponse",
    "ssl_context",
]
