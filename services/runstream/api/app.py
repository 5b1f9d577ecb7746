"""Builds the FastAPI application of a query node: ``create_app(node)``."""

from __future__ import annotations

from fastapi import FastAPI

from runstream import __version__
from runstream.api import admin, mlflow_artifacts, mlflow_rest, native, ui, ui_support
from runstream.api.errors import install_error_handlers
from runstream.api.responses import JSONResponse
from runstream.node import QueryNode


def create_app(node: QueryNode) -> FastAPI:
    app = FastAPI(
        title="runstream",
        version=__version__,
        description="Event-sourced experiment tracking: search, compare and manage runs.",
        default_response_class=JSONResponse,
    )
    app.state.node = node
    install_error_handlers(app)
    app.include_router(admin.router)
    app.include_router(native.router)
    app.include_router(mlflow_rest.router)  # MLflow's REST API (issue #5)
    app.include_router(mlflow_artifacts.router)  # MLflow's artifact proxy (issue #5)
    app.include_router(ui_support.router)  # what the web UI reads beyond native (issue #6)
    app.include_router(ui.router)  # the web UI at / (issue #6)

    @app.get("/health", tags=["node"], summary="Liveness, projector lag and dead letters")
    def health() -> JSONResponse:
        body = node.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    return app
