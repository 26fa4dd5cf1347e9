"""Visitors: who is asking, their active model and name, their prediction budget; kept while they come back.

A visitor is known by an id the server hands out (a random token the page keeps across reloads) or, for
an API client, by its session. Nothing here knows Gradio; ids are opaque strings.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .collection import DigitSet, SetBudget

IDLE_SECONDS = 2 * 3600.0  # a visitor not seen for this long is forgotten (their runs stay on the board)
CAPACITY = 2000  # visitors kept at most; the longest idle go first
PREDICTIONS_PER_SECOND, PREDICTION_BURST = 8.0, 24  # a person draws a stroke every 0.3 s at the fastest
MAX_ID_CHARS = 64
MAX_NAME_CHARS = 40


class RateLimitError(RuntimeError):
    """A visitor asks for predictions faster than the server allows."""


@dataclass
class TokenBucket:
    """`rate` events a second on average, `burst` at once."""

    rate: float
    burst: float
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(eq=False)
class Visitor:
    """One visitor: the model they draw with (None: the server's default), the name they typed, their own
    labelled digits."""

    id: str
    model_name: str | None = None
    name: str = ""
    last_seen: float = 0.0
    bucket: TokenBucket = field(default_factory=lambda: TokenBucket(PREDICTIONS_PER_SECOND, PREDICTION_BURST))
    digits: DigitSet = field(default_factory=DigitSet)


def owner_key(visitor_id: str) -> str:
    """What a saved model records of its owner: a digest of their id, never the id itself."""
    return hashlib.sha256(visitor_id.encode()).hexdigest()[:16]


def new_visitor_id() -> str:
    """A fresh, unguessable visitor id."""
    return secrets.token_urlsafe(18)


def check_visitor_id(visitor_id) -> str:
    """`visitor_id` if it is a plausible id (a short string of URL-safe characters); ValueError if not."""
    ok = isinstance(visitor_id, str) and 8 <= len(visitor_id) <= MAX_ID_CHARS
    if not ok or not all(c.isalnum() or c in "-_" for c in visitor_id):
        shown = repr(visitor_id)[:40]
        raise ValueError(
            f"expected a visitor id of 8-{MAX_ID_CHARS} letters, digits, - or _, received {shown}"
        )
    return visitor_id


class Visitors:
    """The visitors of one process, least recently seen first; bounded in count and idle time."""

    def __init__(
        self,
        idle_seconds: float = IDLE_SECONDS,
        capacity: int = CAPACITY,
        clock=time.monotonic,
        budget: SetBudget | None = None,
    ):
        if not idle_seconds > 0 or not capacity >= 1:
            raise ValueError(
                f"expected idle_seconds > 0 and capacity >= 1, received {idle_seconds}, {capacity}"
            )
        self.idle_seconds, self.capacity, self._clock = idle_seconds, capacity, clock
        self._visitors: OrderedDict[str, Visitor] = OrderedDict()
        self._lock = threading.Lock()
        self.budget = budget or SetBudget()  # the drawings all visitors' sets hold together

    def get(self, visitor_id: str) -> Visitor:
        """The visitor with this id, made if new; seeing them keeps them."""
        check_visitor_id(visitor_id)
        now = self._clock()
        with self._lock:
            self._expire(now)
            visitor = self._visitors.pop(visitor_id, None)
            if visitor is None:
                visitor = Visitor(visitor_id, digits=DigitSet(self.budget))
            visitor.last_seen = now
            self._visitors[visitor_id] = visitor
            while len(self._visitors) > self.capacity:
                self._forget(self._visitors.popitem(last=False)[1])
            return visitor

    @staticmethod
    def _forget(visitor: Visitor) -> None:
        """A visitor is gone: so are their drawings (nothing of them was ever written to disk)."""
        visitor.digits.clear()

    def _expire(self, now: float) -> None:
        while self._visitors:
            oldest = next(iter(self._visitors.values()))
            if now - oldest.last_seen <= self.idle_seconds:
                return
            self._forget(self._visitors.popitem(last=False)[1])

    def __len__(self) -> int:
        return len(self._visitors)

    def __contains__(self, visitor_id: str) -> bool:
        return visitor_id in self._visitors

    def active_models(self) -> set[str]:
        """The names of the models some visitor has picked."""
        with self._lock:
            return {v.model_name for v in self._visitors.values() if v.model_name}

    def allow_prediction(self, visitor: Visitor) -> None:
        """RateLimitError when `visitor` has used up their predictions for the moment."""
        with self._lock:
            allowed = visitor.bucket.take(self._clock())
        if not allowed:
            raise RateLimitError(
                f"too many drawings at once: at most {PREDICTIONS_PER_SECOND:g} a second; wait a moment"
            )

    def set_name(self, visitor: Visitor, name) -> str:
        """The name `visitor` shows on the class board: printable, at most MAX_NAME_CHARS; '' for none."""
        if name is None:
            name = ""
        if not isinstance(name, str):
            raise ValueError(f"expected a name as text, received {type(name).__name__}")
        cleaned = " ".join("".join(c for c in name if c.isprintable()).split())
        if len(cleaned) > MAX_NAME_CHARS:
            raise ValueError(f"a name has at most {MAX_NAME_CHARS} characters, received {len(cleaned)}")
        visitor.name = cleaned
        return cleaned
