"""Who is calling: the principal an API key stands for, and which records it may see.

A core value shared by the API (which identifies callers) and the job records (which store
an owner per check and upload). Records made with keys off, or before owners existed, have no
owner and are seen by admins only once keys are on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: the name of its API key, and whether it is an admin.

    Attributes:
        name: The key's name (``CKPT_COMPAT_API_KEYS`` ``name=key`` entries, or ``key-`` and
            a hash of a plain key); None when keys are off (the API is open to one caller).
        admin: Sees and manages every check and upload (``CKPT_COMPAT_ADMIN_KEYS``, and
            everyone when keys are off).
    """

    name: str | None
    admin: bool = False

    @property
    def owner(self) -> str | None:
        """The owner written on the records this principal makes."""
        return self.name

    def may_see(self, owner: str | None) -> bool:
        """Whether a record with this owner is visible (others' records answer 404)."""
        return self.admin or (owner is not None and owner == self.name)


OPEN_ACCESS = Principal(name=None, admin=True)
"""The one caller of a service without API keys: it sees every record."""
