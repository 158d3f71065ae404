"""The dashboard's pages at /ui: Jinja2 templates rendered on the server, live parts refreshed by
the vendored htmx (static/htmx.min.js), charts as inline SVG. Read-only: every route is a GET.

Access: open on a loopback bind with no token set; otherwise the token is required, given once as
`/ui?token=…` (then kept in an HttpOnly cookie) or as `Authorization: Bearer …`, and compared in
constant time. Bound beyond loopback with no token, every page says how to set one (403).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import requests
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from web3.exceptions import Web3Exception

from tributa.cli.format import eth, utc_time
from tributa.dashboard import charts
from tributa.dashboard.data import Dashboard, Missing
from tributa.dashboard.text import highlight
from tributa.errors import TributaError
from tributa.imo import whole_tokens

PREFIX = "/ui"
COOKIE = "tributa_ui_token"
HERE = Path(__file__).parent
# The pages load their own script and stylesheet and nothing else (no CDN, no inline script).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_DOWN = (TributaError, OSError, requests.RequestException, Web3Exception)  # the node (or oracle) is away


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


@dataclass(frozen=True)
class Access:
    host: str  # the address the server is bound to
    token: str | None = None

    @property
    def open(self) -> bool:
        return self.token is None and is_loopback(self.host)

    def refusal(self, request: Request, render) -> Response | None:
        """None when the request may see the pages, else the answer it gets instead."""
        if self.open:
            return None
        if self.token is None:
            return render(
                "error.html",
                403,
                title="Dashboard locked",
                message=f"This server is bound to {self.host}, beyond loopback, and no dashboard token is set. "
                "Start it with --ui-token (or TRIBUTA_UI_TOKEN) to open the dashboard to those who have it.",
            )
        given = request.query_params.get("token")
        bearer = request.headers.get("authorization", "")
        offered = given or (bearer[7:] if bearer.lower().startswith("bearer ") else None) or request.cookies.get(COOKIE)
        if offered is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
            return render(
                "error.html",
                401,
                title="Token required",
                message="Open this page once as /ui?token=… with the dashboard's token (--ui-token or TRIBUTA_UI_TOKEN).",
            )
        if given is None:
            return None
        # Out of the address bar (and history, and logs of later requests): into a cookie.
        rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        redirect = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
        redirect.set_cookie(
            COOKIE, self.token, httponly=True, samesite="strict", path=PREFIX, secure=request.url.scheme == "https"
        )
        return redirect


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters.update(
        eth=eth,
        utc=lambda t: utc_time(t) if t else "-",
        short=lambda h: f"{h[:8]}…{h[-6:]}" if h and len(h) > 16 else (h or "-"),
        bps=lambda b: f"{b / 100:.2f}%",
        tokens=whole_tokens,
        ago=lambda t: "never" if t is None else f"{max(0.0, time.time() - t):.0f} s ago",
        pretty=lambda v: json.dumps(v, indent=2, ensure_ascii=False)[:4000],
        highlight=highlight,
        zip=lambda a, b: zip(a, b, strict=False),
    )
    env.globals.update(ui=PREFIX, eth=eth, bars=charts.bars, line=charts.line, progress=charts.progress)
    return env


def _id(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 78:  # uint256 ids: more digits name nothing
        raise Missing(f"{what} {text[:40]!r} does not exist")
    return int(text)


def install(app: FastAPI, dashboard: Dashboard, access: Access) -> None:
    """Mount the pages at /ui (and their static files at /ui/static) on `app`."""
    env = _environment()
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def render(template: str, status: int = 200, **context) -> HTMLResponse:
        html = env.get_template(template).render(header=dashboard.header(), **context)
        return HTMLResponse(
            html, status_code=status, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
        )

    def page(request: Request, template: str, nav: str, build) -> Response:
        refused = access.refusal(request, render)
        if refused is not None:
            return refused
        try:
            context = build()
        except Missing as exc:
            return render("error.html", 404, title="Not found", message=str(exc), nav=nav)
        except _DOWN as exc:
            return render(
                "error.html",
                503,
                title="Unavailable",
                nav=nav,
                message=f"This page could not be read from the chain ({type(exc).__name__}: {str(exc)[:200]}); reload to retry.",
            )
        return render(template, nav=nav, **context)

    @router.get("")
    @router.get("/")
    @router.get("/tasks")
    def tasks(request: Request):
        return page(
            request, "tasks.html", "tasks", lambda: {"tasks": dashboard.tasks(), "activity": dashboard.activity()}
        )

    @router.get("/tasks/{task_id}")
    def task(request: Request, task_id: str):
        return page(request, "task.html", "tasks", lambda: {"t": dashboard.task(_id(task_id, "task"))})

    @router.get("/agents")
    def agents(request: Request):
        return page(request, "agents.html", "agents", lambda: {"agents": dashboard.agents()})

    @router.get("/agents/{address}")
    def agent(request: Request, address: str):
        return page(request, "agent.html", "agents", lambda: {"a": dashboard.agent(address)})

    @router.get("/datasets")
    def datasets(request: Request):
        return page(request, "datasets.html", "datasets", lambda: dashboard.datasets())

    @router.get("/datasets/{dataset_id}")
    def dataset(request: Request, dataset_id: str):
        return page(request, "dataset.html", "datasets", lambda: {"d": dashboard.dataset(_id(dataset_id, "dataset"))})

    @router.get("/models")
    def models(request: Request):
        return page(request, "models.html", "models", lambda: {"models": dashboard.models()})

    @router.get("/models/{model_id}")
    def model(request: Request, model_id: str):
        return page(request, "model.html", "models", lambda: {"m": dashboard.model(_id(model_id, "model"))})

    @router.get("/oracle")
    def oracle(request: Request):
        return page(request, "oracle.html", "oracle", lambda: {"h": dashboard.health()})

    @router.get("/{rest:path}")
    def unknown(request: Request, rest: str):
        def missing():
            raise Missing(f"there is no page {PREFIX}/{rest[:60]}")

        return page(request, "error.html", "", missing)

    app.include_router(router)


def standalone_app(dashboard: Dashboard, access: Access) -> FastAPI:
    """`tributa dashboard`'s server: the pages alone, / sending to /ui."""
    app = FastAPI(title="Tributa dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    install(app, dashboard, access)

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse(PREFIX, status_code=307)

    return app
