"""The one exception hierarchy: every user-facing failure is a HonedError with a message that names
what went wrong, where (file:line or recipe key), the value seen, and the fix.

The CLI prints `error: <message>` on one line and exits 2; the library never prints or exits. The HTTP
API answers with the same message and a status: `ApiError` carries its own, the rest are mapped by class.
"""


class HonedError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug in honed."""


class ConfigError(HonedError):
    """A recipe or CLI override is invalid."""


class DataError(HonedError):
    """A dataset file or row is missing, malformed or unusable."""


class ModelError(HonedError):
    """A base model cannot be found, downloaded or loaded."""


class TrainingError(HonedError):
    """Training cannot continue (non-finite loss, incompatible checkpoint...)."""


class TrainingInterrupted(HonedError):
    """Training was stopped by a signal after saving a checkpoint; the message says how to resume."""


class ExportError(HonedError):
    """An export failed or its parity check did not hold."""


class ResourceError(HonedError):
    """The run needs more memory than the device has; the message names the cheapest change that fits."""


class NotFoundError(HonedError):
    """A named thing (request, model, run) does not exist."""


class ApiError(HonedError):
    """A request the HTTP API refuses, answered with `status` and OpenAI's error `kind` (its "type");
    `param` names the request field at fault. Other HonedErrors get their status from the HTTP layer's
    table (`honed.serve.app`)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.kind, self.param = message, status, kind, param
