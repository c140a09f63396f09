"""The access policy itself: tokens, roles, actions, the read-only repository, token files."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferkit import Settings, errors
from inferkit.auth import AccessPolicy, read_token_file, token_from_headers

DATA, ADMIN = "data-token-0123456789", "admin-token-0123456789"


def test_off_without_tokens() -> None:
    policy = AccessPolicy()
    assert not policy.enabled and not policy.needed
    for action in ("open", "data", "admin"):
        assert policy.authorize(None, action) is None


@pytest.mark.parametrize(
    ("token", "action", "outcome"),
    [
        (None, "open", None),
        ("wrong", "open", None),
        (DATA, "data", "data"),
        (ADMIN, "data", "admin"),  # an admin token may do what a data token may
        (ADMIN, "admin", "admin"),
        (None, "data", errors.Unauthenticated),
        ("", "data", errors.Unauthenticated),
        ("wrong", "data", errors.Unauthenticated),
        (DATA[:-1], "data", errors.Unauthenticated),  # a prefix is not the token
        (DATA + "x", "data", errors.Unauthenticated),
        (None, "admin", errors.Unauthenticated),
        (DATA, "admin", errors.PermissionDenied),
    ],
)
def test_authorize(token: str | None, action: str, outcome: object) -> None:
    policy = AccessPolicy([DATA], [ADMIN])
    if isinstance(outcome, type):
        with pytest.raises(outcome) as raised:
            policy.authorize(token, action)  # type: ignore[arg-type]
        assert type(raised.value) is outcome
    else:
        assert policy.authorize(token, action) == outcome  # type: ignore[arg-type]


def test_messages_say_what_to_send() -> None:
    policy = AccessPolicy([DATA])
    with pytest.raises(errors.Unauthenticated, match=r"^Missing token: send 'Authorization"):
        policy.authorize(None, "data")
    with pytest.raises(errors.Unauthenticated, match=r"^Invalid token"):
        policy.authorize("nope", "data")
    # Without admin tokens, nobody loads or unloads.
    with pytest.raises(errors.PermissionDenied, match="needs an admin token"):
        policy.authorize(DATA, "admin")


def test_read_only_refuses_admin_actions_whatever_the_token() -> None:
    for policy in (AccessPolicy(read_only=True), AccessPolicy([DATA], [ADMIN], read_only=True)):
        assert policy.needed
        with pytest.raises(errors.RepositoryReadOnly) as raised:
            policy.authorize(ADMIN if policy.enabled else None, "admin")
        assert raised.value.code == "REPOSITORY_READ_ONLY"
        assert isinstance(raised.value, errors.PermissionDenied)
    assert AccessPolicy(read_only=True).authorize(None, "data") is None
    # Authentication still comes first: an unknown caller learns nothing about the repository.
    with pytest.raises(errors.Unauthenticated):
        AccessPolicy([DATA], read_only=True).authorize("wrong", "admin")


def test_admin_tokens_alone_turn_authentication_on() -> None:
    policy = AccessPolicy(admin_tokens=[ADMIN])
    assert policy.enabled
    with pytest.raises(errors.Unauthenticated):
        policy.authorize(None, "data")
    assert policy.authorize(ADMIN, "data") == "admin"


def test_the_same_token_in_both_lists_is_admin() -> None:
    assert AccessPolicy([ADMIN], [ADMIN]).role(ADMIN) == "admin"


def test_non_ascii_tokens_compare() -> None:
    policy = AccessPolicy(["jeton-été"])
    assert policy.role("jeton-été") == "data"
    assert policy.role("jeton-ete") is None


@pytest.mark.parametrize("bad", ["", "   ", " padded", "padded "])
def test_empty_or_padded_tokens_are_settings_errors(bad: str) -> None:
    with pytest.raises(errors.SettingsError, match="auth_tokens"):
        AccessPolicy([DATA, bad])
    with pytest.raises(errors.SettingsError, match="admin_tokens"):
        AccessPolicy(admin_tokens=[bad])


@pytest.mark.parametrize(
    ("authorization", "api_key", "token"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer abc", None, "abc"),  # the scheme in any case (RFC 7235)
        ("BEARER   abc  ", None, "abc"),
        ("Basic dXNlcjpwdw==", None, None),
        ("Bearer", None, None),
        ("Bearer ", "key", "key"),
        (None, "key", "key"),
        (None, "  ", None),
        ("Bearer abc", "key", "abc"),  # Authorization wins
        (None, None, None),
    ],
)
def test_token_from_headers(authorization: str | None, api_key: str | None, token: str | None):
    assert token_from_headers(authorization, api_key) == token


def test_token_files(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated 2026-12\n\n  first  \nsecond\n#disabled\n")
    assert read_token_file(str(tokens), "auth_tokens_file") == ["first", "second"]
    admin = tmp_path / "admin"
    admin.write_text(ADMIN + "\n")
    settings = Settings(
        auth_tokens=["listed"], auth_tokens_file=str(tokens), admin_tokens_file=str(admin)
    )
    policy = AccessPolicy.from_settings(settings)
    assert [policy.role(t) for t in ("listed", "first", "second", ADMIN, "#disabled")] == [
        "data",
        "data",
        "data",
        "admin",
        None,
    ]


def test_token_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(errors.SettingsError, match=r"^Cannot read auth_tokens_file .*missing: "):
        AccessPolicy.from_settings(Settings(auth_tokens_file=str(missing)))
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(errors.SettingsError, match=r"admin_tokens_file .* holds no token"):
        AccessPolicy.from_settings(Settings(admin_tokens_file=str(empty)))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(errors.SettingsError, match="not UTF-8 text"):
        read_token_file(str(binary), "auth_tokens_file")


def test_settings_messages_never_contain_a_token(tmp_path: Path) -> None:
    with pytest.raises(errors.SettingsError) as raised:
        AccessPolicy(["secret-one", " secret-two"])
    assert "secret" not in raised.value.message
