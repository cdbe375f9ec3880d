"""One error tree for the whole service; each error knows its HTTP status and problem type.

Every error the caller can fix is a 4xx ``application/problem+json`` (RFC 9457). The same
error raised in a worker is stored on the failed check as the same problem, so a script sees
one vocabulary whether it waited or polled.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "/problems/"


class AppError(Exception):
    """Base of every error the service reports as a problem.

    Subclasses set ``status``, ``slug`` and ``title``; the instance carries ``detail``
    (what was wrong and what to do) and optional extension members.
    """

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    @property
    def type(self) -> str:
        """The problem type URI (relative, stable)."""
        return PROBLEM_BASE + self.slug

    def to_problem(self) -> dict[str, Any]:
        """The RFC 9457 problem body for this error."""
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extensions,
        }


class ArchitectureNotFoundError(AppError, LookupError):
    status = 404
    slug = "architecture-not-found"
    title = "Unknown architecture"


class ArchitectureArgumentsError(AppError, ValueError):
    status = 422
    slug = "invalid-architecture-arguments"
    title = "The architecture rejected its arguments"


class ArchitectureBuildError(AppError, RuntimeError):
    status = 422
    slug = "architecture-build-failed"
    title = "The architecture could not be built"


class InvalidOptionsError(AppError, ValueError):
    status = 422
    slug = "invalid-options"
    title = "Invalid options"


class InvalidRequestError(AppError, ValueError):
    status = 422
    slug = "invalid-request"
    title = "Invalid request"


class MalformedRequestError(AppError, ValueError):
    status = 400
    slug = "malformed-request"
    title = "Malformed request body"


class UploadInUseError(AppError, RuntimeError):
    status = 409
    slug = "upload-in-use"
    title = "The upload is used by checks"


class SourceChangedError(AppError, RuntimeError):
    status = 409
    slug = "source-changed"
    title = "The source changed after the check was submitted"


class UnsupportedMediaTypeError(AppError, ValueError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class UploadTooLargeError(AppError, ValueError):
    status = 413
    slug = "upload-too-large"
    title = "Upload too large"


class SourceForbiddenError(AppError, PermissionError):
    status = 403
    slug = "source-forbidden"
    title = "The source path is not allowed"


class SourceNotFoundError(AppError, LookupError):
    status = 404
    slug = "source-not-found"
    title = "Source not found"


class SourceUnreachableError(AppError, ConnectionError):
    """The object storage a URI source names cannot be reached, or refused the request."""

    status = 502
    slug = "source-unreachable"
    title = "The storage of the source could not be reached"


class SourceNotRegularError(AppError, ValueError):
    """A path source (or a file it reads) is a FIFO, socket or device: opening it would block."""

    status = 422
    slug = "source-not-regular"
    title = "The source is not a regular file"


class UnsupportedFormatError(AppError, ValueError):
    status = 415
    slug = "unsupported-format"
    title = "Not a supported checkpoint format"


class CorruptCheckpointError(AppError, ValueError):
    status = 422
    slug = "corrupt-checkpoint"
    title = "The checkpoint file is damaged"


class UnmergeableTensorError(AppError, ValueError):
    """A tensor the merge cannot copy or cast: sparse, meta, packed, or a dtype without a cast."""

    status = 422
    slug = "unmergeable-tensor"
    title = "A tensor of the checkpoint cannot be merged"


class UnsafeCheckpointError(AppError, ValueError):
    status = 422
    slug = "unsafe-checkpoint"
    title = "The checkpoint holds objects that are not loaded safely"


class ArchiveLayoutError(AppError, ValueError):
    status = 422
    slug = "invalid-archive"
    title = "The zip archive is not laid out as torch.save writes it"


class UnauthorizedError(AppError, PermissionError):
    status = 401
    slug = "unauthorized"
    title = "A valid API key is required"


class NoTensorsError(AppError, ValueError):
    status = 422
    slug = "no-tensors"
    title = "No tensors found"


class StateDictKeyError(AppError, KeyError):
    status = 422
    slug = "state-dict-key-not-found"
    title = "state_dict_key not found"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.detail


class CheckNotFoundError(AppError, LookupError):
    status = 404
    slug = "check-not-found"
    title = "Check not found"


class CheckExpiredError(AppError, LookupError):
    status = 410
    slug = "check-expired"
    title = "The check's results expired"


class ReportNotReadyError(AppError, RuntimeError):
    status = 409
    slug = "report-not-ready"
    title = "The check has not finished"


class CheckFailedError(AppError, RuntimeError):
    status = 409
    slug = "check-failed"
    title = "The check failed"


class MergedNotAvailableError(AppError, LookupError):
    status = 404
    slug = "merged-not-available"
    title = "No merged state_dict for this check"


class InsufficientStorageError(AppError, OSError):
    status = 507
    slug = "insufficient-storage"
    title = "Insufficient storage"


class CheckTimeoutError(AppError, TimeoutError):
    status = 422
    slug = "check-timed-out"
    title = "The check took too long"


class LimitExceededError(AppError, ValueError):
    status = 422
    slug = "limit-exceeded"
    title = "A limit was exceeded"

    @classmethod
    def for_setting(cls, what: str, *, limit: str, value: int | float) -> LimitExceededError:
        """The error naming the setting (``CKPT_COMPAT_<LIMIT>``) and its value.

        Example:
            >>> LimitExceededError.for_setting("Too big.", limit="max_x", value=3).detail
            'Too big. The limit is max_x=3 (setting CKPT_COMPAT_MAX_X).'
        """
        return cls(
            f"{what} The limit is {limit}={value} (setting CKPT_COMPAT_{limit.upper()}).",
            limit=limit,
            limit_value=value,
        )


class WorkerCrashedError(AppError, RuntimeError):
    status = 500
    slug = "worker-crashed"
    title = "The worker crashed"


class ServiceUnavailableError(AppError, RuntimeError):
    status = 503
    slug = "service-unavailable"
    title = "Service unavailable"


class DatabaseUnavailableError(AppError, ConnectionError):
    """The check records cannot be reached (server down, restarting, network); the service
    reconnects by itself, so ``retry_after`` says when to try again."""

    status = 503
    slug = "database-unavailable"
    title = "The database is unavailable"


class StorageUnavailableError(AppError, ConnectionError):
    """The service's own object storage (``CKPT_COMPAT_STORAGE_URL=s3://...``) cannot be
    reached or refused a request: nothing was kept, and ``retry_after`` is set when the
    failure looks passing (a store down or restarting), not for a missing bucket or wrong
    credentials, which wait for an operator."""

    status = 503
    slug = "storage-unavailable"
    title = "The storage is unavailable"


class CatalogIndexNotReadyError(AppError, RuntimeError):
    """The catalogue index is still being built; ``retry_after`` says when to come back."""

    status = 503
    slug = "catalog-index-not-ready"
    title = "The catalogue index is not ready"


class CallbackNotAllowedError(AppError, ValueError):
    """``options.callback_url`` names a host outside ``CKPT_COMPAT_CALLBACK_HOSTS``, or
    callbacks are off: refused at submission so no request is ever made to it."""

    status = 422
    slug = "callback-not-allowed"
    title = "The callback URL is not allowed"


class IdempotencyKeyReusedError(AppError, ValueError):
    """An ``Idempotency-Key`` already used for a different request by the same principal."""

    status = 422
    slug = "idempotency-key-reused"
    title = "The idempotency key was used for another request"


class IdempotencyKeyInFlightError(AppError, RuntimeError):
    """The first request with this ``Idempotency-Key`` has not been answered yet."""

    status = 409
    slug = "idempotency-key-in-flight"
    title = "A request with this idempotency key is in progress"


class MlflowPyTorchFlavourError(AppError, ValueError):
    """An MLflow artifact directory holding only MLflow's pytorch flavour: ``data/model.pth``
    pickles a whole ``nn.Module``, which is never unpickled here."""

    status = 422
    slug = "mlflow-pytorch-flavour"
    title = "MLflow's pytorch flavour pickles a whole module"


class WebhookSignatureError(AppError, PermissionError):
    """An MLflow webhook delivery whose ``X-MLflow-Signature`` does not verify."""

    status = 401
    slug = "invalid-webhook-signature"
    title = "The webhook signature does not verify"


class StaleWebhookError(AppError, ValueError):
    """An MLflow webhook delivery whose timestamp is outside the accepted window (a replay)."""

    status = 400
    slug = "stale-webhook"
    title = "The webhook timestamp is outside the accepted window"


class IntegrationDisabledError(AppError, LookupError):
    """An integration endpoint of a service where that integration is not configured."""

    status = 404
    slug = "integration-disabled"
    title = "This integration is not enabled"


class InternalError(AppError, RuntimeError):
    """An unexpected failure; its detail never carries paths or tracebacks."""


_ALL_ERRORS: tuple[type[AppError], ...] = (AppError, *AppError.__subclasses__())
ERRORS_BY_SLUG: dict[str, type[AppError]] = {cls.slug: cls for cls in _ALL_ERRORS}


def error_from_problem(problem: dict[str, Any]) -> AppError:
    """Rebuild the error a worker reported as a problem, so the web process can raise it."""
    slug = str(problem.get("type", "")).removeprefix(PROBLEM_BASE)
    cls = ERRORS_BY_SLUG.get(slug, InternalError)
    extensions = {
        k: v for k, v in problem.items() if k not in {"type", "title", "status", "detail"}
    }
    return cls(str(problem.get("detail", "")), **extensions)
