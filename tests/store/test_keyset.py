"""The in-memory key set that deduplicates DuckDB appends answers exactly like a set."""

from __future__ import annotations

import numpy as np

from orbita.store.events.keyset import KeySet


def test_key_set_answers_like_a_python_set_through_many_merges() -> None:
    rng = np.random.default_rng(7)
    start = rng.integers(0, 2**64, 5_000, dtype=np.uint64, endpoint=False)
    keys = KeySet(start)
    expected = set(start.tolist())
    for size in [1, 3, 700, 2_000, 50, 9_000, 10, 4_000, 1, 16_000]:
        batch = rng.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)
        # half known keys, half new ones, and the extremes of the key space
        probe = np.concatenate(
            (
                batch,
                rng.choice(np.array(sorted(expected), dtype=np.uint64), size),
                np.array([0, 2**64 - 1, 1 << 63], dtype=np.uint64),
            )
        )
        assert keys.contains(probe).tolist() == [int(k) in expected for k in probe]
        keys.add(batch)
        expected |= set(batch.tolist())
    assert keys.contains(np.array(sorted(expected), dtype=np.uint64)).all()


def test_empty_key_set_and_edge_keys() -> None:
    keys = KeySet()
    edges = np.array([0, 1, 2**64 - 1], dtype=np.uint64)
    assert not keys.contains(edges).any()
    keys.add(edges[:1])
    keys.add(edges[2:])
    assert keys.contains(edges).tolist() == [True, False, True]
    assert len(keys) == 2
