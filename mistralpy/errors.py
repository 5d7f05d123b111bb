"""One exception hierarchy: everything the user can cause is a MistralpyError with a one-line message."""


class MistralpyError(Exception):
    """Base of every error mistralpy raises on purpose."""


class ModelNotFoundError(MistralpyError):
    """The model path does not exist, or the embedded model is not installed."""


class ModelLoadError(MistralpyError):
    """The file exists but cannot be read as a model (not GGUF, truncated, missing tensors...)."""


class UnsupportedArchitectureError(MistralpyError):
    """The model's architecture has no implementation in mistralpy.models."""


class InvalidRequestError(MistralpyError, ValueError):
    """A request or a parameter is invalid (bad sampling value, prompt too long...)."""


class LimitExceededError(InvalidRequestError):
    """A request goes over one of the server's request limits; `limit` names it (server/limits.py)."""

    def __init__(self, message: str, limit: str, param: str | None = None) -> None:
        super().__init__(message)
        self.limit, self.param = limit, param


class LoRAAdapterError(InvalidRequestError):
    """A LoRA adapter cannot be read or does not fit the base model (the message names the file and the problem)."""


class PromptTooLongError(InvalidRequestError):
    """The prompt (plus the tokens to generate) does not fit in the model's context."""


class GenerationError(MistralpyError):
    """A request failed while it was being generated, through no fault of the others in its batch (e.g. its
    structured-output grammar reached a state llguidance cannot go on from); the server answers 500."""


class UnknownModelError(InvalidRequestError):
    """A request names a model other than the one being served (HTTP 404 at the server)."""

    def __init__(self, name: str, served: str, server: str = "this server") -> None:
        super().__init__(f"the model '{name}' does not exist; {server} serves '{served}'")
        self.name, self.served = name, served
