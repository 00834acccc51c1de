"""Record batches streamed into Parquet part files, with the content digest taken on the way.

Memory stays bounded whatever the row count: batches are held only until a row group is full
(``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_BYTES``), and a part file is closed and a new one opened
once it holds ``PART_BYTES`` of data. Files are written under a temporary name and renamed when
complete; they are only a staging copy, which the registry's commit protocol uploads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from modelyard.sql.digest import ContentDigest

ROW_GROUP_ROWS = 1 << 20
ROW_GROUP_BYTES = 64 << 20
PART_BYTES = 512 << 20
COMPRESSION = "snappy"


class PartWriter:
    """Writes ``folder/part-00000.parquet``, ``part-00001.parquet``, ... of one schema."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder = folder
        self.schema = schema
        self.digest = ContentDigest(schema)
        self.parts: list[Path] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._temp: Path | None = None
        self._part_bytes = 0

    @property
    def rows(self) -> int:
        return self.digest.rows

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self.digest.update(batch)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def write_all(self, batches: Iterable[pa.RecordBatch]) -> None:
        for batch in batches:
            self.write(batch)

    def close(self, keep_empty: bool = False) -> list[Path]:
        """Finish the last part; an empty result gets one part holding only the schema when
        ``keep_empty`` (a reader then still sees the columns), else none."""
        self._flush()
        if not self.parts and self._writer is None and keep_empty:
            self._open().write_table(self.schema.empty_table())
        self._finish_part()
        return list(self.parts)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)
            self._temp = None

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, self.schema)
        self._open().write_table(table, row_group_size=max(table.num_rows, 1))
        self._part_bytes += self._pending_bytes
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        if self._part_bytes >= PART_BYTES:
            self._finish_part()

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._temp = self.folder / f".part-{len(self.parts):05d}.parquet.tmp"
            self._writer = pq.ParquetWriter(
                self._temp, self.schema, compression=COMPRESSION, write_statistics=True
            )
            self._part_bytes = 0
        return self._writer

    def _finish_part(self) -> None:
        if self._writer is None or self._temp is None:
            return
        self._writer.close()
        final = self.folder / f"part-{len(self.parts):05d}.parquet"
        os.replace(self._temp, final)  # no fsync: the blob store makes the upload durable
        self.parts.append(final)
        self._writer, self._temp = None, None
