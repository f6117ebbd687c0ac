"""A debugging CloudEvents sink: weir's analogue of Knative's ``event_display``.

Point a sender at it (``K_SINK`` for ``weir egress``, a ``Trigger``'s subscriber,
``curl``) to see what it delivers. Events come in binary or structured content
mode and are decoded strictly with weir's schemas (:func:`schemas.from_http`).

Answers: **202** for a valid weir event, which is then handed to ``show`` (the
``weir event-display`` command prints it); **400** with the reason for anything
else; **413** over the size limit; **503** after the last of ``count`` events, while
the server shuts down (retriable, so a sender keeps what this sink did not show).
Nothing is stored or forwarded. ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas import Event, EventDecodeError, EventTooLargeError, ServiceError, from_http
from schemas.binding import DEFAULT_MAX_BYTES

log = logging.getLogger("weir.event_display")


def _problem(status: int, error: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


class EventDisplay:
    """Decodes each POSTed CloudEvent and shows it; done after ``count`` events."""

    def __init__(
        self,
        show: Callable[[Event[Any]], None],
        *,
        count: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        reject: Callable[[str], None] | None = None,
    ) -> None:
        self.show = show
        self.count = count
        self.max_bytes = max_bytes
        self.reject = reject or (lambda reason: log.warning("rejected: %s", reason))
        self.on_done: Callable[[], None] = lambda: None
        self.shown = 0

    @property
    def done(self) -> bool:
        return self.count is not None and self.shown >= self.count

    async def handle(self, request: Request) -> JSONResponse:
        if self.done:
            return _problem(503, "ShuttingDown", f"already showed {self.shown} events")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            reason = f"body is {declared} bytes, over {self.max_bytes}"
            self.reject(f"EventTooLarge: {reason}")
            return _problem(413, "EventTooLarge", reason)
        body = await request.body()
        try:
            event = from_http(dict(request.headers), body, max_bytes=self.max_bytes)
        except EventDecodeError as err:
            self.reject(f"{err.error_class}: {err.reason}")
            status = 413 if isinstance(err, EventTooLargeError) else 400
            return _problem(status, err.error_class, err.reason)
        self.show(event)
        self.shown += 1
        if self.done:
            self.on_done()
        return JSONResponse({"id": event.id, "shown": self.shown}, status_code=202)


def create_event_display_app(display: EventDisplay) -> Starlette:
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "shown": display.shown})

    return Starlette(
        routes=[
            Route("/", display.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def run_event_display(
    display: EventDisplay,
    *,
    host: str,
    port: int,
    listening: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve ``display`` on host:port until it is done or interrupted.

    ``listening`` gets the sink's URL once the port is bound.
    """
    import uvicorn

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family)
    except OSError as err:
        raise ServiceError(
            f"event-display cannot listen on {host}:{port}: {err}",
            service="event-display",
            address=f"{host}:{port}",
            retriable=False,
        ) from err
    # no access log: it would go to stdout, which is the events' (and --json's) alone
    config = uvicorn.Config(
        create_event_display_app(display), log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    display.on_done = lambda: setattr(server, "should_exit", True)
    listening(f"http://{host}:{port}/")
    with sock:
        server.run(sockets=[sock])
