"""Row ids (tickerq.ids): RFC 9562 version 7 layout, unique, ordered by time."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from tickerq.ids import id_at, new_id


def test_layout_is_rfc_9562_version_7() -> None:
    before = time.time_ns() // 1_000_000
    made = [new_id() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    for value in made:
        assert value.version == 7 and value.variant == "specified in RFC 4122"
        assert before <= value.int >> 80 <= after
    # 74 random bits: the tails of ids made in one millisecond differ
    assert len({v.int & ((1 << 62) - 1) for v in made}) == len(made)


@given(st.lists(st.integers(0, 2**48 - 1), min_size=2, max_size=20, unique=True))
def test_ids_sort_by_the_millisecond_they_were_made_in(millis: list[int]) -> None:
    made = [id_at(ms) for ms in millis]
    assert [v.int >> 80 for v in sorted(made)] == sorted(millis)
    assert all(v.version == 7 for v in made)
