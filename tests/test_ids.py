"""Request ids: UUID-shaped (version 4), unique within a server and between servers."""

from __future__ import annotations

import uuid

from inferkit.ids import RequestIds


def test_ids_are_version_4_uuids_in_canonical_text() -> None:
    ids = RequestIds()
    for _ in range(100):
        text = ids()
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lower-case, hyphenated
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_do_not_repeat_within_or_across_servers() -> None:
    first, second = RequestIds(), RequestIds()
    drawn = [first() for _ in range(5000)] + [second() for _ in range(5000)]
    assert len(set(drawn)) == len(drawn)
    # Different servers differ in the random part, not only in where their counters start.
    assert drawn[0][:23] != drawn[-1][:23]
