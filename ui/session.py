"""Who is asking: each page (kept across reloads) and each API client is its own visitor.

The page keeps a server-made visitor id in the browser (gr.BrowserState); its load event tells the server
which id the page's Gradio session belongs to. An API client that never says is known by its session.
The drawing surface's server function has no session, so the page's surface carries the id in its value.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict

import gradio as gr

from mnist_core.visitors import Visitor, check_visitor_id, new_visitor_id, owner_key

STORAGE_KEY = "mnist-studio-visitor"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
SESSIONS_KEPT = 4000  # Gradio sessions remembered (two per visitor or so); the oldest are forgotten


def client_address(request: gr.Request | None) -> str | None:
    """Where a request comes from: the client's address (through a share link, the visitor's)."""
    if request is None or request.client is None:
        return None
    host = request.client.host
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[-1].strip()
    # A share link arrives through a local tunnel, which appends the visitor's address last; the header
    # is trusted only from loopback, since any remote client could write one.
    return forwarded if forwarded and host in LOOPBACK else host


class Sessions:
    """Gradio session -> visitor id, bounded; and the visitors themselves through the studio."""

    def __init__(self, studio, capacity: int = SESSIONS_KEPT):
        self.studio = studio
        self.capacity = capacity
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        # Decrypts what this server wrote into browsers; a restarted server starts everyone afresh.
        self.secret = secrets.token_hex(16)

    def browser_state(self) -> gr.BrowserState:
        return gr.BrowserState(None, storage_key=STORAGE_KEY, secret=self.secret)

    def start(self, stored, request: gr.Request | None) -> str:
        """The visitor id of a page that has just loaded: the one its browser kept, or a new one."""
        try:
            visitor_id = check_visitor_id(stored)
        except ValueError:
            visitor_id = new_visitor_id()
        if request is not None and request.session_hash:
            with self._lock:
                self._ids[request.session_hash] = visitor_id
                self._ids.move_to_end(request.session_hash)
                while len(self._ids) > self.capacity:
                    self._ids.popitem(last=False)
        self.studio.visitors.get(visitor_id)
        return visitor_id

    def visitor(self, request: gr.Request | None) -> Visitor | None:
        """The visitor behind an event: the page's id, else the API client's session; None without one."""
        session = getattr(request, "session_hash", None) if request is not None else None
        if not session:
            return None
        with self._lock:
            visitor_id = self._ids.get(session, session)
        try:
            return self.studio.visitors.get(visitor_id)
        except ValueError:  # a session string that cannot be an id: an anonymous caller
            return None

    def from_token(self, token, request: gr.Request | None) -> Visitor:
        """The visitor a drawing message names (only an id the server made and still knows), else one per
        client address, so that the prediction budget still applies."""
        if isinstance(token, str) and token in self.studio.visitors:
            return self.studio.visitors.get(token)
        return self.studio.visitors.get(f"addr-{owner_key(client_address(request) or 'unknown')}")
