"""The holder checkpoints' length table (heap.lengths) and the copies' packed answers.

A Celery pool child waited 0.07-0.15 s at each checkpoint while the lengths of
~11,000 containers, sent by the walking copy as JSON, were decoded into an int
and a list entry per container under tracemalloc. The copy now aligns its
lengths to the table it inherited and the worker appends two arrays.
"""

from __future__ import annotations

import tracemalloc

import pytest

from leakscope.heap.fork import Packed, decode_answer, encode_answer
from leakscope.heap.lengths import ABSENT, LengthTable


def series(table: LengthTable, key: int) -> list[int]:
    row = table.rows_of({key}).get(key)
    return [] if row is None else table.series(row)


def test_rows_keep_their_container_across_checkpoints() -> None:
    table = LengthTable()
    table.add({10: 1, 20: 5})
    table.add({20: 6, 30: 2})  # 10 gone, 30 new
    table.add({10: 3, 20: 7, 30: 2})
    assert series(table, 10) == [1, ABSENT, 3]
    assert series(table, 20) == [5, 6, 7]
    assert series(table, 30) == [ABSENT, 2, 2]
    assert series(table, 99) == []
    assert table.checkpoints == 3


def test_again_replaces_the_last_checkpoint() -> None:
    table = LengthTable()
    for n in (1, 2, 3):
        table.add({10: n})
    table.add({10: 3, 40: 1}, again=True)
    assert series(table, 10) == [1, 2, 3]
    assert series(table, 40) == [ABSENT, ABSENT, 1]


def test_growing_rows_rise_at_every_checkpoint_over_three() -> None:
    table = LengthTable()
    table.add({1: 1, 2: 1, 3: 5})
    table.add({1: 2, 2: 2, 3: 6, 4: 1})
    assert table.growing_rows() == []  # two checkpoints decide nothing
    column = table.align({1: 3, 2: 2, 3: 7, 4: 2})[1]
    # What a copy computes before the worker has the column ...
    pending = [table.ids[r] for r in table.growing_rows(column)]
    table.add({1: 3, 2: 2, 3: 7, 4: 2})
    # ... is what the worker reads once it has: 2 stalled, 4 came late.
    assert pending == [table.ids[r] for r in table.growing_rows()] == [1, 3]


def test_a_packed_checkpoint_costs_the_worker_a_few_allocations_whatever_the_heap() -> None:
    """The worker's side of a checkpoint: two arrays appended, not an object per container."""
    counts = []
    for containers in (1_000, 20_000):
        table = LengthTable()
        table.add({key: 1 for key in range(containers)})
        new_ids, column = table.align({key: 2 for key in range(containers + 50)})
        answer = decode_answer(encode_answer(Packed({"n": 1}, [new_ids.tobytes(),
                                                                column.tobytes()])))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            table.add_packed(answer.blobs[0], answer.blobs[1])
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        counts.append(sum(s.count for s in snapshot.statistics("filename")))
        assert series(table, containers + 10) == [ABSENT, 2]
        assert before == 0
    assert counts[0] == counts[1] < 10, counts


def test_answers_round_trip_and_a_cut_answer_is_refused() -> None:
    assert decode_answer(encode_answer({"found": [1, 2]})) == {"found": [1, 2]}
    payload = encode_answer(Packed({"rows": 3}, [b"abc", b"defgh"]))
    answer = decode_answer(payload)
    assert isinstance(answer, Packed) and answer.header == {"rows": 3}
    assert [bytes(blob) for blob in answer.blobs] == [b"abc", b"defgh"]
    with pytest.raises(ValueError):
        decode_answer(payload[:-1])
    with pytest.raises(ValueError):
        decode_answer(payload[:12])


def test_a_column_of_the_wrong_size_is_refused() -> None:
    table = LengthTable()
    table.add({1: 1, 2: 2})
    new_ids, column = table.align({1: 2, 2: 3})
    with pytest.raises(ValueError):
        table.add_packed(new_ids.tobytes(), column.tobytes()[:-8])
