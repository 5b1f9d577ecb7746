"""What a run records about its origin without being asked: source, git, user, environment.

Every probe is best effort: a missing ``git``, a slow repository or an odd interpreter set
a field to None, never fail the run. ``git`` runs as a subprocess with a short timeout.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal

SourceType = Literal["NOTEBOOK", "JOB", "PROJECT", "LOCAL", "UNKNOWN"]
GIT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class SourceInfo:
    name: str
    type: SourceType
    entry_point: str | None = None
    # The directory git is asked about: the script's, else the working directory.
    directory: Path | None = None


@dataclass(frozen=True)
class GitInfo:
    commit: str | None = None
    dirty: bool | None = None
    remote: str | None = None
    branch: str | None = None


@dataclass(frozen=True)
class Environment:
    user: str
    host: str
    python_version: str
    command_line: list[str]
    packages: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- source


def source_info(
    argv: list[str] | None = None,
    main: ModuleType | None = None,
    modules: dict[str, ModuleType] | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
) -> SourceInfo:
    """Where the code that started the run comes from.

    - a notebook (an IPython kernel is loaded): type NOTEBOOK, name the notebook's path
      when the kernel says it (``JPY_SESSION_NAME``), else "notebook";
    - ``python -m pkg.module``: type LOCAL, name and entry point the module;
    - ``python path/script.py`` or a console script: type LOCAL, name the script's path;
    - an interactive interpreter or ``python -c``: type LOCAL, name "<stdin>" / "<string>".
    """
    argv = list(sys.argv if argv is None else argv)
    modules = sys.modules if modules is None else modules
    main = modules.get("__main__") if main is None else main
    environ = os.environ if environ is None else environ
    cwd = Path.cwd()

    if "ipykernel" in modules or "google.colab" in modules:
        name = environ.get("JPY_SESSION_NAME") or environ.get("MLFLOW_NOTEBOOK_NAME") or "notebook"
        directory = Path(name).parent if os.path.isabs(name) else cwd
        return SourceInfo(name=name, type="NOTEBOOK", directory=directory)

    spec = getattr(main, "__spec__", None)
    main_file = getattr(main, "__file__", None)
    if spec is not None and getattr(spec, "name", None) and spec.name != "__main__":
        module = spec.name.removesuffix(".__main__")
        directory = Path(main_file).resolve().parent if main_file else cwd
        return SourceInfo(name=module, type="LOCAL", entry_point=module, directory=directory)

    first = argv[0] if argv else ""
    if first in ("", "-"):
        return SourceInfo(name="<stdin>", type="LOCAL", directory=cwd)
    if first == "-c":
        return SourceInfo(name="<string>", type="LOCAL", directory=cwd)
    path = Path(main_file or first)
    with contextlib.suppress(OSError):
        path = path.resolve()
    return SourceInfo(name=str(path), type="LOCAL", directory=path.parent)


# ------------------------------------------------------------------------- git

_CREDENTIALS = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@]*@", re.IGNORECASE)


def strip_credentials(url: str) -> str:
    """``https://user:token@host/x.git`` -> ``https://host/x.git``; ssh-style URLs unchanged."""
    return _CREDENTIALS.sub(r"\g<scheme>", url)


def _git(args: list[str], cwd: Path, git: str, timeout_s: float) -> str | None:
    try:
        proc = subprocess.run(
            [git, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"},
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip()


def git_info(directory: Path | None, *, timeout_s: float = GIT_TIMEOUT_S) -> GitInfo:
    """The commit checked out at ``directory``, whether tracked files differ, origin's URL."""
    git = shutil.which("git")
    if git is None or directory is None or not directory.is_dir():
        return GitInfo()
    commit = _git(["rev-parse", "HEAD"], directory, git, timeout_s)
    if not commit or not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        return GitInfo()
    status = _git(["status", "--porcelain", "--untracked-files=no"], directory, git, timeout_s)
    dirty = None if status is None else bool(status)
    remote = _git(["config", "--get", "remote.origin.url"], directory, git, timeout_s)
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], directory, git, timeout_s)
    return GitInfo(
        commit=commit,
        dirty=dirty,
        remote=strip_credentials(remote) if remote else None,
        branch=branch if branch and branch != "HEAD" else None,
    )


# ----------------------------------------------------------------- environment


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


@functools.lru_cache(maxsize=1)
def installed_packages() -> tuple[str, ...]:
    """``name==version`` of every distribution importable here, sorted, once per process."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        try:
            name = dist.metadata["Name"]
            version = dist.version
        except Exception:  # noqa: BLE001 - a broken dist-info must not fail the run
            continue
        if name and version and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={version}"
    return tuple(sorted(seen.values(), key=str.lower))


def environment() -> Environment:
    orig = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return Environment(
        user=current_user(),
        host=socket.gethostname(),
        python_version=platform.python_version(),
        command_line=[str(a) for a in orig],
        packages=list(installed_packages()),
    )
