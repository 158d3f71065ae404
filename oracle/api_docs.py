"""`/docs` without the internet: Swagger UI from the copy `make setup` installs with npm
(swagger-ui-dist, pinned in package.json), instead of FastAPI's default CDN links, which leave a
blank page on an offline machine. Without that copy, `/docs` says where the schema is."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from tributa.config import REPO_ROOT

ASSETS = "/docs/assets"


def swagger_ui_dir() -> Path | None:
    """$TRIBUTA_SWAGGER_UI_DIR, else the checkout's node_modules copy; None if neither has it."""
    configured = os.environ.get("TRIBUTA_SWAGGER_UI_DIR")
    folder = Path(configured) if configured else REPO_ROOT / "node_modules" / "swagger-ui-dist"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def mount_docs(app: FastAPI) -> None:
    """Serve /docs from local assets (the app must be built with docs_url=None, redoc_url=None)."""
    folder = swagger_ui_dir()
    if folder is not None:
        app.mount(ASSETS, StaticFiles(directory=folder), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if folder is None:
            return HTMLResponse(
                "<p>Swagger UI is not installed here (run <code>make setup</code>, or set "
                "TRIBUTA_SWAGGER_UI_DIR to a swagger-ui-dist folder). The schema is at "
                '<a href="/openapi.json">/openapi.json</a>.</p>',
                status_code=503,
            )
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",  # None only for an app serving no schema
            title=f"{app.title} - docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
