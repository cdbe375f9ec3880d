"""Architecture names (``source:name``): the one parser, and resolution against a catalogue.

Pure and torch-free, so the web process resolves names from a cached catalogue while
workers resolve them against the live registry, with the same rules and suggestions.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from app.errors import ArchitectureNotFoundError

# A bare name resolves to the first source, in this order, that knows it. torchvision and
# timm come first so bare names keep resolving as before transformers was added; transformers
# model types (``bert``, ``llama``) come next, so a bare ``bert`` is ``transformers:bert``;
# plugins come last and are always reachable as ``plugin:<name>``.
SOURCE_PRECEDENCE: tuple[str, ...] = ("torchvision", "timm", "transformers", "plugin")


@dataclass(frozen=True, slots=True, order=True)
class QualifiedName:
    """An architecture name with its source, written ``source:name``.

    Attributes:
        source: One of ``SOURCE_PRECEDENCE``.
        name: The name inside that source (``resnet50``).
    """

    source: str
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


def parse_name(text: str) -> tuple[str | None, str]:
    """Split an architecture name into (source, name); the source is None for a bare name.

    Args:
        text: ``source:name`` or a bare ``name``; surrounding spaces are ignored.

    Returns:
        The source (or None) and the name.

    Raises:
        ArchitectureNotFoundError: The name is empty or the source prefix is unknown.

    Example:
        >>> parse_name("timm:vit_base_patch16_224")
        ('timm', 'vit_base_patch16_224')
        >>> parse_name("resnet50")
        (None, 'resnet50')
    """
    source, sep, name = text.strip().partition(":")
    if not sep:
        source, name = "", source
    source, name = source.strip(), name.strip()
    if not name:
        raise ArchitectureNotFoundError(
            f"Empty architecture name {text!r}; write 'source:name' or a bare name.",
            sources=list(SOURCE_PRECEDENCE),
        )
    if not sep:
        return None, name
    check_source(source)
    return source, name


def check_source(source: str) -> str:
    """Return ``source`` if it is a known source.

    Raises:
        ArchitectureNotFoundError: The source is not one of ``SOURCE_PRECEDENCE``.
    """
    if source not in SOURCE_PRECEDENCE:
        raise ArchitectureNotFoundError(
            f"Unknown architecture source {source!r}; "
            f"the sources are {', '.join(SOURCE_PRECEDENCE)}.",
            sources=list(SOURCE_PRECEDENCE),
        )
    return source


_MAX_SUGGESTIONS = 5


def resolve_in(text: str, catalogue: Sequence[QualifiedName]) -> QualifiedName:
    """Resolve a qualified or bare name against a catalogue; bare names by source precedence.

    Raises:
        ArchitectureNotFoundError: No entry matches; the detail and the ``suggestions``
            extension list up to 5 close names.

    Example:
        >>> both = [QualifiedName("timm", "resnet18"), QualifiedName("torchvision", "resnet18")]
        >>> str(resolve_in("resnet18", both))
        'torchvision:resnet18'
    """
    source, name = parse_name(text)
    known = set(catalogue)
    for candidate in (source,) if source else SOURCE_PRECEDENCE:
        if QualifiedName(candidate, name) in known:
            return QualifiedName(candidate, name)
    suggestions = suggest_names(text.strip(), catalogue)
    hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
    raise ArchitectureNotFoundError(
        f"Unknown architecture {text.strip()!r}.{hint} "
        f"GET /v1/architectures?q={quote(name)}* lists the architectures whose name matches.",
        suggestions=suggestions,
    )


def suggest_names(text: str, catalogue: Iterable[QualifiedName]) -> list[str]:
    """Up to 5 qualified names close to ``text`` (compared bare and qualified), best first."""
    by_text: dict[str, QualifiedName] = {}
    rank = {source: i for i, source in enumerate(SOURCE_PRECEDENCE)}
    for qualified in sorted(catalogue, key=lambda q: rank.get(q.source, len(rank))):
        by_text.setdefault(str(qualified), qualified)
        by_text.setdefault(qualified.name, qualified)  # the bare name resolves by precedence
    close = difflib.get_close_matches(text, list(by_text), n=_MAX_SUGGESTIONS * 2)
    return list(dict.fromkeys(str(by_text[match]) for match in close))[:_MAX_SUGGESTIONS]
