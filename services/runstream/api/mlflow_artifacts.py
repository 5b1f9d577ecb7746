"""MLflow's artifact proxy (``/api/2.0/mlflow-artifacts/artifacts/...``) over the node's artifact root.

Runs carry ``artifact_uri = mlflow-artifacts:/<experiment_id>/<run_id>/artifacts``, so the
``mlflow`` client sends ``log_artifact``, ``list_artifacts`` and ``download_artifacts`` here.
Files live under ``Settings.artifacts_dir`` as ``<root>/<experiment_id>/<run_id>/artifacts/<path>``
(the layout of the native client's artifact store).

* PUT ``.../artifacts/<exp>/<run>/artifacts/<path>``: the body is streamed to a temporary file
  beside the target (hashed on the way), renamed into place, and an ``artifact.logged`` event
  with its size and sha256 is published through the commands; the answer (200, empty body)
  comes once this node's projector applied it. The run must exist, be active and belong to
  ``<exp>``.
* GET ``.../artifacts/<path>``: the file's bytes, as an attachment.
* GET ``.../artifacts?path=<dir>``: the direct children of ``<dir>`` as ``{"files": [{path
  (base name), is_dir, file_size}]}``. Inside a run the listing is the read model's (what the
  log says was logged); above runs it is the directory's.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from runstream import queries
from runstream.api.mlflow_rest import _ctx
from runstream.api.mlflow_wire import MlflowError, error_response, json_response
from runstream.errors import Conflict, InvalidInput, NotFound

__all__ = ["ARTIFACT_PREFIXES", "router"]

ARTIFACT_PREFIXES = ("/api/2.0/mlflow-artifacts", "/ajax-api/2.0/mlflow-artifacts")
TEMP_PREFIX = ".tmp-upload-"
_DRIVE = re.compile(r"^[A-Za-z]:")


def _parts(path: str, *, allow_root: bool = False) -> list[str]:
    """The segments of a relative artifact path; 400 for anything that could leave the root."""
    if path in ("", "/") and allow_root:
        return []
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or _DRIVE.match(path)
    ):
        raise InvalidInput(f"Invalid path {path[:200]!r}")
    parts = path.rstrip("/").split("/") if allow_root else path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"Invalid path {path[:200]!r}")
    return parts


def _root(request: Request) -> Path:
    return Path(request.app.state.node.settings.artifacts_dir)


def _inside(root: Path, parts: list[str]) -> Path:
    target = root.joinpath(*parts)
    resolved_root = root.resolve()
    resolved = target.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise InvalidInput("Invalid path: it leaves the artifact root")
    return target


def _run_parts(parts: list[str]) -> tuple[str, str, str] | None:
    """(experiment_id, run_id, path inside the run) when ``parts`` point into a run's artifacts."""
    if len(parts) >= 3 and parts[2] == "artifacts":
        return parts[0], parts[1], "/".join(parts[3:])
    return None


def _check_run(request: Request, experiment_id: str, run_id: str) -> None:
    ctx = _ctx(request)
    with ctx.reading() as cur:
        row = cur.execute(
            "SELECT experiment_id, lifecycle_stage FROM runs WHERE run_id = ?", [run_id]
        ).fetchone()
        if row is None:
            raise queries.run_not_found(cur, run_id)
    if row[0] != experiment_id:
        raise InvalidInput(
            f"Run {run_id} belongs to experiment {row[0]}, not {experiment_id}: upload to "
            f"mlflow-artifacts:/{row[0]}/{run_id}/artifacts"
        )
    if row[1] != "active":
        raise Conflict(f"The run {run_id} must be in the 'active' state. Current state is {row[1]}.")


def _open_temp(dest: Path) -> tuple[int, str]:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InvalidInput(f"Invalid path: a parent of {dest.name!r} is a file") from None
    if dest.is_dir():
        raise InvalidInput(f"Invalid path: {dest.name!r} is a directory")
    return tempfile.mkstemp(dir=dest.parent, prefix=TEMP_PREFIX)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


async def upload(request: Request, path: str) -> Response:
    try:
        parts = _parts(path)
        located = _run_parts(parts)
        if located is None or not located[2]:
            raise InvalidInput(
                f"Invalid path {path[:200]!r}: artifacts are uploaded to "
                "<experiment_id>/<run_id>/artifacts/<path>"
            )
        experiment_id, run_id, rel = located
        await run_in_threadpool(_check_run, request, experiment_id, run_id)
        dest = _inside(_root(request), parts)
        fd, tmp = await run_in_threadpool(_open_temp, dest)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    if chunk:
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            os.replace(tmp, dest)
        except BaseException:
            _unlink(tmp)
            raise
        await run_in_threadpool(
            _ctx(request).commands.log_artifact, run_id, rel, size, digest.hexdigest()
        )
    except Exception as exc:  # noqa: BLE001 - every failure becomes an MLflow error body
        return error_response(exc)
    return Response(status_code=200)


async def download(request: Request, path: str) -> Response:
    try:
        parts = _parts(path)
        target = _inside(_root(request), parts)
        if target.is_dir():
            raise InvalidInput(f"Invalid path {path[:200]!r}: it is a directory, not a file")
        if not target.is_file() or target.name.startswith(TEMP_PREFIX):
            raise NotFound(f"Artifact {path[:200]!r} does not exist")
    except Exception as exc:  # noqa: BLE001
        return error_response(exc)
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media_type, filename=target.name)


def _list_run(request: Request, run_id: str, sub: str) -> list[dict[str, Any]]:
    with _ctx(request).reading() as cur:
        try:
            entries = queries.list_artifacts(cur, run_id, sub or None)
        except NotFound:
            return []
    files = []
    for entry in entries:
        info: dict[str, Any] = {"path": entry.path.rsplit("/", 1)[-1], "is_dir": entry.is_dir}
        if not entry.is_dir and entry.size is not None:
            info["file_size"] = entry.size
        files.append(info)
    return files


def _list_dir(directory: Path) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    files = []
    for child in sorted(directory.iterdir(), key=lambda p: p.name):
        if child.name.startswith(TEMP_PREFIX):
            continue
        if child.is_dir():
            files.append({"path": child.name, "is_dir": True})
        elif child.is_file():
            files.append({"path": child.name, "is_dir": False, "file_size": child.stat().st_size})
    return files


async def list_artifacts(request: Request) -> Response:
    try:
        path = request.query_params.get("path") or ""
        parts = _parts(path, allow_root=True)
        located = _run_parts(parts)
        if located is not None:
            files = await run_in_threadpool(_list_run, request, located[1], located[2])
        else:
            directory = _inside(_root(request), parts)
            files = await run_in_threadpool(_list_dir, directory)
    except Exception as exc:  # noqa: BLE001
        return error_response(exc)
    return json_response({"files": files} if files else {})


async def delete(request: Request, path: str) -> Response:
    return error_response(MlflowError(
        "NOT_IMPLEMENTED",
        "Deleting single artifacts is not supported: runstream removes a run's artifacts when "
        "the retention job purges the run.",
    ))


async def not_found(request: Request, rest: str) -> Response:
    return error_response(MlflowError(
        "ENDPOINT_NOT_FOUND",
        f"No artifact endpoint {request.method} {request.url.path} on runstream "
        "(multipart uploads and presigned URLs are not offered)",
    ))


def build_router() -> APIRouter:
    router = APIRouter(tags=["mlflow-artifacts"])
    for prefix in ARTIFACT_PREFIXES:
        shown = prefix.startswith("/api")
        router.add_api_route(f"{prefix}/artifacts", list_artifacts, methods=["GET"],
                             include_in_schema=shown)
        router.add_api_route(f"{prefix}/artifacts/{{path:path}}", upload, methods=["PUT"],
                             include_in_schema=shown)
        router.add_api_route(f"{prefix}/artifacts/{{path:path}}", download, methods=["GET"],
                             include_in_schema=shown)
        router.add_api_route(f"{prefix}/artifacts/{{path:path}}", delete, methods=["DELETE"],
                             include_in_schema=False)
        router.add_api_route(f"{prefix}/{{rest:path}}", not_found,
                             methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                             include_in_schema=False)
    return router


router = build_router()
