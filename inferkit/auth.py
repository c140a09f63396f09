"""Who may call what: static bearer tokens, an admin role, a read-only repository.

The check is plain data and a pure function, shared by the REST and gRPC transports: each
reads the presented token from its own wire (``Authorization: Bearer ...`` or ``X-API-Key``
on REST, the same keys in gRPC metadata), says which :data:`Action` the call is, and calls
:meth:`AccessPolicy.authorize`, which raises :class:`~inferkit.errors.Unauthenticated`,
:class:`~inferkit.errors.PermissionDenied` or :class:`~inferkit.errors.RepositoryReadOnly`.

Tokens are compared by their SHA-256 digests with :func:`hmac.compare_digest`, against every
configured token without stopping at the first match: the time an answer takes tells neither
how much of a token was right nor which token matched.

Authentication is off unless a token is configured (``auth_tokens``, ``admin_tokens`` or their
``*_file`` forms). Health probes and the metrics port are never behind it: see
``docs/security.md``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from .errors import PermissionDenied, RepositoryReadOnly, SettingsError, Unauthenticated
from .settings import Settings

__all__ = [
    "API_KEY_HEADER",
    "AccessPolicy",
    "Action",
    "Role",
    "read_token_file",
    "token_from_headers",
]

#: What a call does: ``open`` (health), ``data`` (inference, metadata, index, custom routes)
#: or ``admin`` (loading and unloading models).
Action = Literal["open", "data", "admin"]
#: What a token may do: ``data`` calls, or ``admin`` ones too.
Role = Literal["data", "admin"]

#: The header (and gRPC metadata key) carrying a bare token, for clients that cannot send
#: ``Authorization: Bearer``. Lower case: HTTP/2 and ASGI header names are.
API_KEY_HEADER = "x-api-key"


class AccessPolicy:
    """The tokens and rules of one server; :meth:`authorize` is the one check."""

    __slots__ = ("_admin", "_data", "read_only")

    def __init__(
        self,
        tokens: Iterable[str] = (),
        admin_tokens: Iterable[str] = (),
        *,
        read_only: bool = False,
    ) -> None:
        self._data = _digests(tokens, "auth_tokens")
        self._admin = _digests(admin_tokens, "admin_tokens")
        self.read_only = read_only

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        """The policy of ``settings``: tokens from the lists and from the token files.

        The files are read once, here (a transport builds its policy when its app is made):
        rotating a token takes a restart. Raises :class:`SettingsError` for a file that cannot
        be read or holds no token, and for an empty token.
        """
        tokens = [*settings.auth_tokens]
        if settings.auth_tokens_file:
            tokens += read_token_file(settings.auth_tokens_file, "auth_tokens_file")
        admin = [*settings.admin_tokens]
        if settings.admin_tokens_file:
            admin += read_token_file(settings.admin_tokens_file, "admin_tokens_file")
        return cls(tokens, admin, read_only=settings.repository_read_only)

    @property
    def enabled(self) -> bool:
        """Whether calls need a token (some token is configured)."""
        return bool(self._data or self._admin)

    @property
    def needed(self) -> bool:
        """Whether :meth:`authorize` can refuse anything (a transport may skip it otherwise)."""
        return self.enabled or self.read_only

    def role(self, token: str | None) -> Role | None:
        """The role of ``token``, or None when it matches no configured token."""
        if not token:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        # Every digest is compared, with no early exit, so timing does not tell which matched.
        admin = _matches(presented, self._admin)
        data = _matches(presented, self._data)
        if admin:
            return "admin"
        return "data" if data else None

    def authorize(self, token: str | None, action: Action) -> Role | None:
        """Allow the call or raise why not; returns the caller's role (None if auth is off).

        ``Unauthenticated`` for a missing or unknown token (when auth is on),
        ``RepositoryReadOnly`` for an admin action when ``repository_read_only`` is set,
        ``PermissionDenied`` for an admin action with a data token.
        """
        if action == "open":
            return None
        role: Role | None = None
        if self.enabled:
            role = self.role(token)
            if role is None:
                detail = "Invalid token" if token else "Missing token"
                raise Unauthenticated(
                    f"{detail}: send 'Authorization: Bearer <token>' or '{API_KEY_HEADER}'"
                )
        if action == "admin":
            if self.read_only:
                raise RepositoryReadOnly(
                    "The model repository is read-only (repository_read_only): models cannot"
                    " be loaded or unloaded through the API"
                )
            if self.enabled and role != "admin":
                raise PermissionDenied("Loading and unloading models needs an admin token")
        return role


def token_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """The token a call presents: ``Authorization: Bearer <token>``, else the API-key header.

    The scheme is matched without regard to case (RFC 7235); anything else in
    ``Authorization`` (``Basic ...``) presents no token.
    """
    if authorization:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def read_token_file(path: str, field: str) -> list[str]:
    """The tokens of a file: one per line; blank lines and ``#`` comments are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise SettingsError(f"Cannot read {field} {path}: {reason}") from None
    tokens = [line.strip() for line in text.splitlines()]
    tokens = [t for t in tokens if t and not t.startswith("#")]
    if not tokens:
        raise SettingsError(f"{field} {path} holds no token")
    return tokens


def _digests(tokens: Iterable[str], field: str) -> tuple[bytes, ...]:
    digests = []
    for token in tokens:
        if not token.strip() or token != token.strip():
            # An empty token would let ``Bearer `` in; spaces cannot survive header parsing.
            raise SettingsError(f"Invalid settings: a token in {field} is empty or has spaces")
        digests.append(hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest())
    return tuple(digests)


def _matches(presented: bytes, digests: tuple[bytes, ...]) -> bool:
    found = False
    for digest in digests:
        found |= hmac.compare_digest(presented, digest)
    return found
