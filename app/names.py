"""Architecture names (``source:name``): the one parser, and resolution against a catalogue.

Pure and torch-free, so the web process resolves names from a cached catalogue while
workers resolve them against the live registry, with the same rules.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import ArchitectureNotFoundError

SOURCE_PRECEDENCE: tuple[str, ...] = ("torchvision", "timm", "plugin")


@dataclass(frozen=True, slots=True, order=True)
class QualifiedName:
    """An architecture name with its source; ``str()`` gives ``source:name``."""

    source: str
    name: str

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


def parse_name(text: str) -> tuple[str | None, str]:
    """Split ``"source:name"``; a bare name has source None.

    Example:
        >>> parse_name("torchvision:resnet50")
        ('torchvision', 'resnet50')
        >>> parse_name("resnet50")
        (None, 'resnet50')
    """
    text = text.strip()
    source, sep, name = text.partition(":")
    if not sep:
        return None, text
    if source not in SOURCE_PRECEDENCE:
        raise ArchitectureNotFoundError(
            f"Unknown architecture source {source!r} in {text!r}; "
            f"sources are {', '.join(SOURCE_PRECEDENCE)}.",
            suggestions=[],
        )
    return source, name


def resolve_in(text: str, catalogue: Iterable[QualifiedName]) -> QualifiedName:
    """Resolve a (possibly bare) name against a catalogue, by source precedence.

    Raises:
        ArchitectureNotFoundError: with up to five close names as ``suggestions``.
    """
    source, name = parse_name(text)
    known = set(catalogue)
    sources = (source,) if source else SOURCE_PRECEDENCE
    for candidate_source in sources:
        candidate = QualifiedName(candidate_source, name)
        if candidate in known:
            return candidate
    raise _not_found(text, name, known)


def _not_found(text: str, name: str, known: set[QualifiedName]) -> ArchitectureNotFoundError:
    by_bare: dict[str, QualifiedName] = {}
    for qualified in sorted(known, key=lambda q: SOURCE_PRECEDENCE.index(q.source)
                            if q.source in SOURCE_PRECEDENCE else len(SOURCE_PRECEDENCE)):
        by_bare.setdefault(qualified.name, qualified)
    close = difflib.get_close_matches(name, list(by_bare), n=5, cutoff=0.6)
    suggestions = [str(by_bare[bare]) for bare in close]
    hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
    return ArchitectureNotFoundError(
        f"No architecture named {text!r}.{hint} "
        "GET /v1/architectures?q=<glob> lists the names.",
        suggestions=suggestions,
    )
