"""Validate the text fields of a multipart check as each arrives, before the file is read.

The README's curl example and ``app.client`` send ``architecture`` and ``options`` before
``file``: an unknown architecture, options that are not valid, or builder arguments that ask
for pretrained weights are then refused while the upload has barely started, not after
gigabytes. Fields sent after the file go through the same checks when they arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.architectures.safety import refuse_source_weight_kwargs
from app.names import QualifiedName
from app.schemas import CheckOptions


class EarlyChecks:
    """``on_field`` for ``receive_form``: each field on arrival, the pair once both are known.

    Example:
        >>> checks = EarlyChecks(resolve=catalog.resolve, parse_options=parse_options)
        >>> await receive_form(request, ..., on_field=checks.on_field)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        resolve: Callable[[str], Awaitable[QualifiedName]],
        parse_options: Callable[[str], CheckOptions],
    ) -> None:
        self._resolve = resolve
        self._parse_options = parse_options
        self._architecture: QualifiedName | None = None
        self._options: CheckOptions | None = None

    async def on_field(self, name: str, value: str) -> None:
        """Check one field as soon as its part ends.

        Raises:
            ArchitectureNotFoundError: An unknown architecture (404).
            InvalidOptionsError: ``options`` is not valid (422).
            ArchitectureArgumentsError: ``architecture_kwargs`` ask for weights (422).
        """
        if name == "architecture" and value.strip():
            self._architecture = await self._resolve(value)
        elif name == "options":
            self._options = self._parse_options(value)
        if self._architecture is not None and self._options is not None:
            kwargs = self._options.architecture_kwargs
            refuse_source_weight_kwargs(self._architecture.source, kwargs)

    @property
    def architecture(self) -> QualifiedName | None:
        """The resolved architecture, once a non-blank ``architecture`` field arrived."""
        return self._architecture

    @property
    def options(self) -> CheckOptions:
        """The checked options (the defaults when no ``options`` field arrived)."""
        return self._options if self._options is not None else CheckOptions()
