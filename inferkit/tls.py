"""Server TLS contexts from settings, the same rules for the REST and gRPC listeners."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from .errors import SettingsError

__all__ = ["server_context"]


def server_context(
    prefix: str,
    label: str,
    files: tuple[str | None, str | None, str | None],
    alpn: Sequence[str],
) -> ssl.SSLContext | None:
    """The TLS context of a listener whose settings are ``{prefix}_tls_certificate``,
    ``{prefix}_tls_key`` and ``{prefix}_tls_client_ca`` (``files``, in that order), or
    ``None`` when no certificate is configured.

    Certificate and key (PEM files) go together; with a client CA too, clients must present a
    certificate signed by it (mutual TLS). ``alpn`` lists the protocols offered. Raises
    :class:`~inferkit.errors.SettingsError` for a missing half or files that do not load
    (``label`` names the listener in the message: "HTTP", "gRPC").
    """
    cert, key, client_ca = files
    if not cert and not key:
        if client_ca:
            raise SettingsError(
                f"{prefix}_tls_client_ca needs {prefix}_tls_certificate and {prefix}_tls_key"
            )
        return None
    if not cert or not key:
        raise SettingsError(f"{prefix}_tls_certificate and {prefix}_tls_key must be given together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(list(alpn))
    try:
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"Cannot load the {label} TLS files: {exc}") from None
    return context
