"""Files (OpenAI's Files API): rows in the `files` table, bytes in the Store under names
starting `file-` (the same Store as images, whose janitor only sweeps names that start with
an expiry time). Each file belongs to the key that uploaded it; another key gets 404, as if
the file did not exist."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..accounts import Principal
from ..db.tables import FileRow
from ..errors import InvalidRequest, NotFound
from ..storage import Blob, BlobNotFound, Store

# What a caller may upload. batch_output is ours: the output and error files of a batch.
PURPOSES = ("batch", "vision", "user_data")
ANONYMOUS = "anonymous"


def owner_of(principal: Principal | None) -> str:
    """Whose things a request sees: its key's id, or one anonymous owner on an open server."""
    return principal.key_id if principal is not None else ANONYMOUS


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


class Files:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], store: Store) -> None:
        self.sessions = sessions
        self.store = store

    async def create(self, owner: str, purpose: str, filename: str, data: bytes, *, file_id: str | None = None,
                     check_purpose: bool = True) -> FileRow:
        """Store the bytes, then the row (a crash between leaves an orphan blob, never a row
        without its bytes)."""
        if check_purpose and purpose not in PURPOSES:
            raise InvalidRequest(f"Invalid value for 'purpose': '{purpose[:64]}'; use one of {', '.join(PURPOSES)}.",
                                 param="purpose", code="invalid_value")
        fid = file_id or new_id("file-")
        # Control characters out of the name (PostgreSQL refuses NUL in text).
        filename = "".join(ch if ch.isprintable() else "_" for ch in filename[:512]) or "upload"
        row = FileRow(id=fid, owner=owner, purpose=purpose, filename=filename, bytes=len(data), blob=fid,
                      created_at=int(time.time()))
        await asyncio.to_thread(self.store.put, fid, data)
        async with self.sessions() as s:
            await s.merge(row)
            await s.commit()
        return row

    def put_blob(self, name: str, data: bytes) -> None:
        self.store.put(name, data)

    def load_result(self, result: dict[str, Any] | None) -> dict[str, Any]:
        """A job's result: an error envelope kept in its row, or a response kept in the Store
        (`{"blob": name}`: images stay out of the database). Blocking: call it in a thread."""
        if not result or set(result) != {"blob"}:
            return result or {}
        try:
            body: dict[str, Any] = json.loads(self.store.get(result["blob"]))
        except BlobNotFound:
            return {"error": {"message": "The result is no longer stored.", "type": "invalid_request_error",
                              "param": None, "code": "expired"}}
        return body

    async def get(self, owner: str, file_id: str, param: str | None = None) -> FileRow:
        async with self.sessions() as s:
            row = await s.get(FileRow, file_id[:64])
        if row is None or row.owner != owner:
            raise NotFound(f"No such File object: {file_id[:64]}", param=param, code="file_not_found")
        return row

    async def list(self, owner: str, *, purpose: str | None, after: str | None, limit: int,
                   order: str) -> tuple[Sequence[FileRow], bool]:
        stmt = select(FileRow).where(FileRow.owner == owner)
        if purpose:
            stmt = stmt.where(FileRow.purpose == purpose)
        desc = order != "asc"
        keys = (FileRow.created_at.desc(), FileRow.id.desc()) if desc else (FileRow.created_at, FileRow.id)
        async with self.sessions() as s:
            if after:
                cursor = await s.get(FileRow, after[:64])
                if cursor is None or cursor.owner != owner:
                    raise NotFound(f"No such File object: {after[:64]}", param="after", code="file_not_found")
                if desc:
                    stmt = stmt.where((FileRow.created_at < cursor.created_at)
                                      | ((FileRow.created_at == cursor.created_at) & (FileRow.id < cursor.id)))
                else:
                    stmt = stmt.where((FileRow.created_at > cursor.created_at)
                                      | ((FileRow.created_at == cursor.created_at) & (FileRow.id > cursor.id)))
            rows = list((await s.execute(stmt.order_by(*keys).limit(limit + 1))).scalars())
        return rows[:limit], len(rows) > limit

    async def delete(self, owner: str, file_id: str) -> FileRow:
        row = await self.get(owner, file_id)
        async with self.sessions() as s:
            await s.delete(await s.merge(row))
            await s.commit()
        await asyncio.to_thread(self.store.delete, row.blob)
        return row

    async def read(self, owner: str, file_id: str, param: str | None = None) -> bytes:
        row = await self.get(owner, file_id, param)
        try:
            return await asyncio.to_thread(self.store.get, row.blob)
        except BlobNotFound:
            raise NotFound(f"The content of file {file_id} is gone.", param=param, code="file_not_found") from None

    async def read_input(self, owner: str, file_id: str, param: str) -> bytes:
        """A file a request body names as an input: a missing one (or another key's) is that
        parameter's mistake, a 400 naming it."""
        try:
            return await self.read(owner, file_id, param)
        except NotFound as exc:
            raise InvalidRequest(exc.message, param=param, code="file_not_found") from None

    async def open(self, owner: str, file_id: str) -> tuple[FileRow, Blob]:
        row = await self.get(owner, file_id)
        try:
            return row, await asyncio.to_thread(self.store.open, row.blob)
        except BlobNotFound:
            raise NotFound(f"The content of file {file_id} is gone.", code="file_not_found") from None


def file_object(row: FileRow) -> dict[str, object]:
    """OpenAI's file object."""
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at,
            "filename": row.filename, "purpose": row.purpose, "status": "processed", "expires_at": None,
            "status_details": None}
