"""A deadline for a request's headers: uvicorn's h11 protocol, closing connections whose headers dribble.

uvicorn (0.54) has no header timeout: `timeout_keep_alive` only starts once a response is complete,
so a connection that opens and never finishes its headers ("slowloris") stays open for good. This
subclass arms a timer when a connection opens and when the first bytes of a keep-alive connection's
next request arrive, and closes the connection if the request's headers are not complete in time
(h11 still waits for a request: `their_state is IDLE`). The bytes held meanwhile are bounded by
h11's incomplete-event limit (16 KiB by default; more is a 400).

It reaches into uvicorn's `H11Protocol` (its `conn`, `transport` and `loop` attributes), so it sits
behind one gate: `header_timeout_protocol` checks them and otherwise falls back to plain "h11" with a
warning.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any


def header_timeout_protocol(timeout: float) -> Any:
    """uvicorn's `http=` argument: the h11 protocol with a `timeout`-second deadline for request headers.

    Why: without it a client can hold a connection (and its buffered bytes) open forever by sending
    its headers one byte at a time. Falls back to "h11" (no header deadline) with a warning when this
    uvicorn's h11 protocol does not look as expected.
    """
    try:
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol
    except ImportError:
        return _fallback("uvicorn.protocols.http.h11_impl.H11Protocol is missing")
    missing = [m for m in ("connection_made", "data_received", "connection_lost") if not hasattr(H11Protocol, m)]
    if missing:
        return _fallback(f"H11Protocol has no {missing}")

    class HeaderTimeoutH11(H11Protocol):
        """H11Protocol closing a connection whose request headers take over `timeout` seconds."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_timer: asyncio.TimerHandle | None = None
            self._arm()  # a connection that opens and sends nothing

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first bytes of a keep-alive connection's next request
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            if getattr(self, "_header_timer", None) is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutH11


def _fallback(why: str) -> str:
    warnings.warn(f"textlora serve: no header timeout ({why}); slow clients are bounded only by the body "
                  "timeout and uvicorn's keep-alive timeout. Install a uvicorn close to 0.54 to get it back.",
                  stacklevel=3)
    return "h11"
