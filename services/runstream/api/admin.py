"""Operator endpoints of a node: rebuild the read model, run the retention job."""

from __future__ import annotations

import contextlib
import threading

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from runstream.api.responses import JSONResponse
from runstream.node import QueryNode

router = APIRouter(prefix="/admin", tags=["admin"])


class RetentionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False
    as_of_ms: int | None = Field(default=None, ge=0, description="the clock; default now")


def _node(request: Request) -> QueryNode:
    node: QueryNode = request.app.state.node
    return node


@router.post("/rebuild", status_code=202, summary="Replay the log into a new file and switch to it")
def start_rebuild(request: Request) -> JSONResponse:
    node = _node(request)
    if node.rebuild_status.state == "running":
        return JSONResponse(
            {"error_code": "INVALID_STATE", "message": "a rebuild is already running"}, 409
        )

    def run() -> None:
        # A failure is recorded in rebuild_status and shown in /health and GET /admin/rebuild.
        with contextlib.suppress(Exception):
            node.rebuild()

    threading.Thread(target=run, name="rebuild", daemon=True).start()
    return JSONResponse({"rebuild": "started"}, 202)


@router.get("/rebuild", summary="Progress of the running or last rebuild")
def rebuild_status(request: Request) -> dict[str, object]:
    return dict(_node(request).rebuild_status.__dict__)


@router.post("/retention", summary="Purge runs deleted longer ago than the retention window")
def run_retention(request: Request, body: RetentionRequest) -> dict[str, object]:
    node = _node(request)
    purged = node.purge_expired(as_of_ms=body.as_of_ms, dry_run=body.dry_run)
    return {"dry_run": body.dry_run, "runs": purged, "count": len(purged)}
