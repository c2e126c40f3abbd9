"""Every container's length at each holder checkpoint, kept in flat arrays.

A framework's worker holds tens of thousands of containers. Kept as a list of
ints per container, each checkpoint cost the worker one object per container
(and its ids and lengths decoded from the walking copy's answer, each an int
made under tracemalloc): 0.07-0.15 s a checkpoint in a Celery pool child, the
worker waiting. Here the table is one array of ids (a row per container, in
the order first seen) and one array of lengths per checkpoint (-1 where the
container was not found). The forked copy that walks inherits the table, so
it aligns its lengths to the rows itself (``align``) and computes which rows
grew; the worker only appends the arrays it is sent (``add_packed``): a few
allocations a checkpoint, whatever the heap holds.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Mapping

ABSENT = -1


class LengthTable:
    """Container lengths by row (``ids[row]`` is the container's ``id``) and checkpoint."""

    def __init__(self) -> None:
        self.ids = array("Q")
        self.columns: list[array] = []

    @property
    def checkpoints(self) -> int:
        return len(self.columns)

    def align(self, lengths: Mapping[int, int]) -> tuple[array, array]:
        """The ids not seen before, and this checkpoint's column over the old rows and
        the new ones (in that order). Made where the walk ran (a forked copy)."""
        row_of = {key: row for row, key in enumerate(self.ids)}
        column = array("q", [ABSENT]) * len(self.ids)
        new_ids = array("Q")
        new_lengths = array("q")
        for key, length in lengths.items():
            row = row_of.get(key)
            if row is None:
                new_ids.append(key)
                new_lengths.append(length)
            else:
                column[row] = length
        column.extend(new_lengths)
        return new_ids, column

    def growing_rows(self, column: array | None = None, again: bool = False) -> list[int]:
        """Rows present at every checkpoint, rising at each, over at least three.

        ``column``: a checkpoint not yet added (``again``: replacing the last), so a
        copy can say what grows before the worker has the column.
        """
        columns = list(self.columns)
        if column is not None:
            if again and columns:
                columns.pop()
            columns.append(column)
        if len(columns) < 3:
            return []
        rows = len(columns[-1])
        first, second = columns[0], columns[1]
        candidates = [r for r in range(min(len(first), rows)) if 0 <= first[r] < second[r]]
        for earlier, later in zip(columns[1:], columns[2:]):
            candidates = [r for r in candidates if earlier[r] < later[r]]
        return candidates

    def add_packed(self, new_ids: bytes | memoryview, column: bytes | memoryview,
                   again: bool = False) -> None:
        """Append what ``align`` made (as bytes): new rows, then the checkpoint's column.
        ``again``: it replaces the last checkpoint instead of adding one."""
        added = array("Q")
        added.frombytes(new_ids)
        values = array("q")
        values.frombytes(column)
        if len(values) != len(self.ids) + len(added):
            raise ValueError(f"a column of {len(values)} lengths for "
                             f"{len(self.ids) + len(added)} rows")
        if again and self.columns:
            self.columns.pop()
        if added:
            self.ids.extend(added)
            padding = array("q", [ABSENT]) * len(added)
            for earlier in self.columns:
                earlier.extend(padding)
        self.columns.append(values)

    def add(self, lengths: Mapping[int, int], again: bool = False) -> None:
        """A checkpoint walked in this process."""
        new_ids, column = self.align(lengths)
        self.add_packed(new_ids.tobytes(), column.tobytes(), again)

    def rows_of(self, keys: Collection[int]) -> dict[int, int]:
        """The rows of ``keys`` (those seen), in one pass over the ids: looking ids up
        one by one makes an int per row compared, each traced in a worker."""
        if not keys:
            return {}
        return {key: row for row, key in enumerate(self.ids) if key in keys}

    def series(self, row: int) -> list[int]:
        """A row's length at every checkpoint (-1 where its container was absent)."""
        return [column[row] for column in self.columns]

    def __len__(self) -> int:
        return len(self.ids)
