"""The web view's application: Starlette routes for GET (and HEAD) alone, so that any
other method is answered 405 and reaches no page; every response carries headers that
keep it out of caches and frames; every page is a Jinja2 template with autoescaping, so
whatever a database, a config or a person wrote shows as text, never as markup, and
at most TEXT_SHOWN characters of it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aishell.config.models import Config
from aishell.errors import AishellError, RunNotFound
from aishell.state.runs import LONGEST_RUN_ID
from aishell.terminal import printable
from aishell.units import age_words
from aishell.view import pages
from aishell.view.access import judge

HERE = Path(__file__).parent
# The most characters of one value a page shows: an error of 10 MB stored in a run
# would otherwise be sent whole, on every page that lists it.
TEXT_SHOWN = 2000
SECURITY_HEADERS = {
    "cache-control": "no-store",
    # Its stylesheet alone is loaded: no script, image or frame, even from the view.
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

logger = logging.getLogger(__name__)


class Guard:
    """Outermost: refuses a request the access rules refuse (before any route, so no
    method of any path reaches a page), puts the security headers on every response,
    and logs each request's method, path (never its query: it may hold the token) and
    status."""

    def __init__(self, app: ASGIApp, token: bytes | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # No page speaks it, and the access rules below judge HTTP requests only: a
            # websocket is closed before any route sees it, as policy refuses it (1008).
            await receive()  # its websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":  # the server's lifespan messages
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        request = Request(scope)
        client = scope.get("client")
        verdict = judge(
            client[0] if client else None,
            list(scope["headers"]),
            request.query_params.get("token"),
            self.token,
        )
        scope.setdefault("state", {})["token_in_query"] = (
            request.query_params.get("token") if verdict.by_query else None
        )
        try:
            if verdict.served:
                await self.app(scope, receive, send_secured)
            else:
                refusal = PlainTextResponse(
                    verdict.reason, verdict.status, headers={"www-authenticate": "Bearer"}
                )
                await refusal(scope, receive, send_secured)
        finally:  # a page that failed (500, its traceback in the log alone) is a line too
            logger.info(
                "%s %s %s from %s",
                scope["method"],
                scope["path"],
                status[0] if status else "-",
                client[0] if client else "?",
            )


def templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        # Escaping keeps markup out; a bidi override or an escape sequence in a name or
        # a server's message would still reorder or hide what the page shows around it.
        finalize=shown_text,
    )
    env.filters["age"] = age_words
    env.filters["at"] = moment
    return Jinja2Templates(env=env, context_processors=[_links])


def _links(request: Request) -> dict[str, Any]:
    """`link(path, **query)`: a link within the view, carrying a ?token= it came with."""
    token = request.scope.get("state", {}).get("token_in_query")

    def link(path: str, **query: Any) -> Markup:
        given = {k: v for k, v in query.items() if v is not None}
        if token:
            given["token"] = token
        # A run id is stored text: quoted, a `?`, `#` or `%` in it stays part of the path.
        where = quote(path, safe="/")
        return escape(f"{where}?{urlencode(given)}" if given else where)

    return {"link": link}


def shown_text(value: Any) -> Any:
    """Every value a page shows, its control characters as visible escapes (line breaks
    kept: a multi-line error stays one), and at most TEXT_SHOWN characters of it (what
    the view made itself, Markup, is whole)."""
    if not isinstance(value, str):
        return value
    if not isinstance(value, Markup) and len(value) > TEXT_SHOWN:
        more = len(value) - TEXT_SHOWN
        value = f"{value[:TEXT_SHOWN]}… ({more} more characters: `aishell runs show --json`)"
    shown = printable(value, newlines=True)  # its escapes are plain letters: markup stays
    return Markup(shown) if isinstance(value, Markup) else shown


def moment(value: str | None) -> str:
    """A stored time (ISO 8601, UTC) to the second, as a person reads it; "-" for none."""
    return "-" if not value else f"{value[:19].replace('T', ' ')} UTC"


Page = Callable[[Request], Awaitable[Response]]


# The query parameters a page takes, by the name its read takes each as: a number (an
# index or an offset, never negative, at most NUMBER_LIMIT) or a run id. Any other
# parameter is ignored (?token= is the access rules').
NUMBERS = {"step": "start", "decisions": "decided", "offset": "offset"}
RUN_IDS = {"after": "after"}
NUMBER_LIMIT = 2**31 - 1


class BadQuery(ValueError):
    """A query parameter no page takes as it came: answered 400, with this line."""


def query_values(request: Request, names: tuple[str, ...]) -> dict[str, Any]:
    """The values of the query parameters `names` a request gives, as its page's read
    takes them; a malformed one is BadQuery."""
    given: dict[str, Any] = {}
    for name in names:
        value = request.query_params.get(name)
        if value is None:
            continue
        if name in RUN_IDS:
            if not value or len(value) > LONGEST_RUN_ID:
                raise BadQuery(f"?{name}= takes a run's id, of at most {LONGEST_RUN_ID} characters")
            given[RUN_IDS[name]] = value
        elif value.isascii() and value.isdigit() and int(value) <= NUMBER_LIMIT:
            given[NUMBERS[name]] = int(value)
        else:
            raise BadQuery(f"?{name}= takes a whole number from 0 to {NUMBER_LIMIT}")
    return given


def make_app(config: Config, token: bytes | None) -> ASGIApp:
    """The web view over `config`'s state store; `token`: what remote requests present."""
    shown = templates()

    def page(
        template: str,
        read: Callable[..., dict[str, Any]],
        *params: str,
        query: tuple[str, ...] = (),
    ) -> Page:
        async def render(request: Request) -> Response:
            values = [request.path_params[name] for name in params]
            try:
                given = query_values(request, query)
                data = await run_in_threadpool(read, config, *values, **given)
            except BadQuery as exc:
                return shown.TemplateResponse(request, "error.html", {"error": str(exc)}, 400)
            except RunNotFound as exc:
                return shown.TemplateResponse(request, "error.html", {"error": str(exc)}, 404)
            except AishellError as exc:
                return shown.TemplateResponse(request, "error.html", {"error": str(exc)}, 500)
            return shown.TemplateResponse(request, template, {**data, "page": template})

        return render

    run = page("run.html", pages.run_page, "run_id", query=("step", "decisions"))
    routes = [
        Route("/", page("fleet.html", pages.fleet_page), methods=["GET"]),
        Route("/runs", page("runs.html", pages.runs_page, query=("after",)), methods=["GET"]),
        Route("/runs/{run_id}", run, methods=["GET"]),
        Route(
            "/approvals",
            page("approvals.html", pages.approvals_page, query=("offset",)),
            methods=["GET"],
        ),
        Route(
            "/backups",
            page("backups.html", pages.backups_page, query=("offset",)),
            methods=["GET"],
        ),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Guard(Starlette(routes=routes), token)
