"""The local artifact store: ``<root>/<experiment_id>/<run_id>/artifacts/<path>``.

Files are copied in (through a temporary name, then renamed, so a reader never sees half a
file) and hashed on the way; each becomes one ``artifact.logged`` event with its path,
size and sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runstream.errors import InvalidInput

MODEL_FILE = "MLmodel"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredArtifact:
    path: str  # relative to the run's artifact root, '/'-separated
    size: int
    digest: str  # sha256, hex
    is_model: bool = False


def artifact_uri(experiment_id: str, run_id: str) -> str:
    return f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts"


def clean_artifact_path(path: str | None) -> str:
    """A relative '/'-separated path inside the run's artifacts; '' for the root."""
    if path is None or path in ("", ".", "/"):
        return ""
    p = PurePosixPath(str(path).replace(os.sep, "/"))
    if p.is_absolute() or any(part == ".." for part in p.parts):
        raise InvalidInput(f"artifact path {path!r} must be relative and stay inside the run")
    return "/".join(part for part in p.parts if part not in ("", "."))


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


class ArtifactStore:
    """Writes a run's files under ``root``; the query node serves the same directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run_dir(self, experiment_id: str, run_id: str) -> Path:
        return self.root / experiment_id / run_id / "artifacts"

    def _destination(self, experiment_id: str, run_id: str, rel: str) -> Path:
        dest = self.run_dir(experiment_id, run_id) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def put_bytes(
        self, experiment_id: str, run_id: str, rel: str, data: bytes, *, is_model: bool = False
    ) -> StoredArtifact:
        rel = clean_artifact_path(rel)
        if not rel:
            raise InvalidInput("an artifact needs a file name")
        dest = self._destination(experiment_id, run_id, rel)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, dest)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return StoredArtifact(rel, len(data), hashlib.sha256(data).hexdigest(),
                              is_model or rel.rsplit("/", 1)[-1] == MODEL_FILE)

    def put_file(
        self, experiment_id: str, run_id: str, local: Path, rel: str, *, is_model: bool = False
    ) -> StoredArtifact:
        rel = clean_artifact_path(rel)
        dest = self._destination(experiment_id, run_id, rel)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with open(local, "rb") as src, os.fdopen(fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            shutil.copymode(local, tmp)
            os.replace(tmp, dest)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return StoredArtifact(rel, size, digest.hexdigest(),
                              is_model or rel.rsplit("/", 1)[-1] == MODEL_FILE)

    def put_tree(
        self,
        experiment_id: str,
        run_id: str,
        local_dir: Path,
        artifact_path: str,
        *,
        is_model: bool | None = None,
    ) -> list[StoredArtifact]:
        """Copy every file under ``local_dir`` to ``artifact_path``.

        A directory holding an ``MLmodel`` file is a model (as MLflow lays models out):
        every file in it is marked ``is_model``. ``is_model`` forces the mark either way.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise InvalidInput(f"{local_dir} is not a directory")
        model_dirs = {p.parent for p in local_dir.rglob(MODEL_FILE) if p.is_file()}
        stored = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel_local = path.relative_to(local_dir).as_posix()
            in_model = any(d == path.parent or d in path.parents for d in model_dirs)
            mark = in_model if is_model is None else is_model
            stored.append(
                self.put_file(experiment_id, run_id, path, _join(artifact_path, rel_local),
                              is_model=mark)
            )
        return stored


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
