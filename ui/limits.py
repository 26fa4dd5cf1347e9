"""Limits at the HTTP edge: a cap on request bodies, and a login that answers failures slowly.

Gradio caps uploads (max_file_size) but reads any JSON body whole before an event or a server function
sees it: a 15 MB drawing message cost the server ~190 MB. The body cap is plain ASGI middleware, given to
Gradio's FastAPI app through launch(app_kwargs=...); uploads keep their own limit.
"""

from __future__ import annotations

import asyncio
import hmac

from starlette.middleware import Middleware

MAX_BODY_BYTES = 1024**2  # the largest drawing message (10,000 points) is ~0.3 MB
FAILED_LOGIN_SECONDS = 1.0  # each failed login answers this late, one at a time


class BodyLimit:
    """Answer 413 to any request whose body passes `limit` bytes, except uploads (capped by Gradio)."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if scope["path"].rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        # No length given (a chunked body): read it here, at most `limit` bytes, then hand it on.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await self._refuse(send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        body = f'{{"detail": "request body over {self.limit // 1024} kB"}}'.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def app_kwargs(limit: int = MAX_BODY_BYTES) -> dict:
    """launch(app_kwargs=...) for Gradio's FastAPI app: the body cap as middleware."""
    return {"middleware": [Middleware(BodyLimit, limit=limit)]}


def slow_login(user: str, password: str):
    """Gradio's auth callable for USER:PASS: right at once; wrong after FAILED_LOGIN_SECONDS, one at a time,
    so guessing costs a second a try however many run in parallel."""
    failures = asyncio.Lock()

    async def check(username: str, attempt: str) -> bool:
        right = hmac.compare_digest(str(username).encode(), user.encode())
        right &= hmac.compare_digest(str(attempt).encode(), password.encode())
        if right:
            return True
        async with failures:
            await asyncio.sleep(FAILED_LOGIN_SECONDS)
        return False

    return check
