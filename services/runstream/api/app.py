"""Builds the FastAPI application of a query node: ``create_app(node)``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from runstream import __version__
from runstream.api import admin
from runstream.node import QueryNode


def create_app(node: QueryNode) -> FastAPI:
    app = FastAPI(
        title="runstream",
        version=__version__,
        description="Event-sourced experiment tracking: search, compare and manage runs.",
    )
    app.state.node = node
    app.include_router(admin.router)

    @app.get("/health", tags=["node"], summary="Liveness, projector lag and dead letters")
    def health() -> JSONResponse:
        body = node.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    return app
