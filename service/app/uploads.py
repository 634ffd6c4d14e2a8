"""Reading request bodies under the byte limit: images (or bitstreams) as multipart parts or a raw body.

The limit is enforced while the body streams in: a declared Content-Length over the limit is refused
before reading a byte, and an undeclared (chunked) body is cut off as soon as it passes the limit, so a
client can never make the service buffer more than `max_upload_bytes`. The whole body must also arrive
within `timeout_s` (AEC_BODY_TIMEOUT_S), or the request ends with 408: a client trickling a byte now and
then holds a connection and a buffer for that long, not for ever.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from service.inference.errors import (
    BodyTimeout,
    EmptyBody,
    InvalidMultipart,
    PayloadTooLarge,
    ServiceError,
    TooManyFiles,
)


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    @property
    def label(self) -> str:
        return repr(self.filename) if self.filename else "the body"


async def read_uploads(request: Request, *, max_bytes: int, max_files: int, timeout_s: float = 0.0) -> list[Upload]:
    """All files of a multipart request (in order), or the raw body as one upload.

    Any other content type is a raw body, whatever it claims: `curl --data-binary @x.png` without -H
    sends application/x-www-form-urlencoded, and the bytes themselves say what they are.
    """
    declared, content_type = None, ""
    for key, value in request.scope["headers"]:  # one pass over the raw list (ASGI names are lower case)
        if key == b"content-length":
            declared = value.decode("latin-1")
        elif key == b"content-type":
            content_type = value.decode("latin-1")
    if declared is not None:
        if not declared.isdigit():
            raise ServiceError("Content-Length is not a number", code="invalid_content_length")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {max_bytes}")
    media_type = content_type.split(";")[0].strip().lower()
    limited = Request(request.scope, _limited(request.receive, max_bytes, timeout_s))
    try:
        if media_type == "multipart/form-data":
            return await _multipart(limited, max_files)
        body = bytearray()
        async for chunk in limited.stream():
            body += chunk
    except ClientDisconnect as exc:
        raise ServiceError("the client disconnected before sending the whole body", code="client_disconnected") from exc
    if not body:
        raise EmptyBody("the request body is empty; send an image (or bitstream) as the body or as multipart files")
    return [Upload(bytes(body), None, media_type or None)]


async def _multipart(request: Request, max_files: int) -> list[Upload]:
    try:
        form = await request.form(max_files=max_files, max_fields=32)
    except HTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise TooManyFiles(f"at most {max_files} files per request") from exc
        raise InvalidMultipart(f"malformed multipart body: {exc.detail}") from exc
    try:
        uploads = [
            Upload(await value.read(), value.filename, value.content_type)
            for _, value in form.multi_items()
            if isinstance(value, UploadFile)
        ]
    finally:
        await form.close()
    if not uploads:
        raise EmptyBody("the multipart body holds no file parts; send them with curl -F file=@image.png")
    return uploads


def _limited(receive: Receive, max_bytes: int, timeout_s: float = 0.0) -> Receive:
    """`receive` that refuses more than `max_bytes` and a body still arriving `timeout_s` after the first
    read (0 = no deadline)."""
    seen = 0
    deadline = asyncio.get_running_loop().time() + timeout_s if timeout_s > 0 else None

    async def receive_limited() -> Message:
        nonlocal seen
        if deadline is None:
            message = await receive()
        else:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {timeout_s:g} s (AEC_BODY_TIMEOUT_S); "
                                  f"{seen} bytes came") from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise PayloadTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
        return message

    return receive_limited
