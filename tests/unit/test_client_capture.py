"""What a run captures about its origin: source, git, environment; never failing the run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from runstream.client import capture
from runstream.client.capture import git_info, source_info, strip_credentials

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _module(name: str, file: str | None, spec_name: str | None = None) -> types.ModuleType:
    mod = types.ModuleType(name)
    if file is not None:
        mod.__file__ = file
    mod.__spec__ = (types.SimpleNamespace(name=spec_name) if spec_name else None)  # type: ignore[assignment]
    return mod


def test_a_script_is_local_and_named_by_its_path(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("")
    info = source_info(argv=[str(script), "--lr", "0.1"], main=_module("__main__", str(script)),
                       modules={}, environ={})
    assert info == capture.SourceInfo(name=str(script.resolve()), type="LOCAL",
                                      directory=tmp_path.resolve())


def test_a_module_entry_point_is_named_by_the_module(tmp_path: Path) -> None:
    main = _module("__main__", str(tmp_path / "pkg" / "train.py"), spec_name="pkg.train")
    info = source_info(argv=[str(tmp_path / "pkg" / "train.py")], main=main, modules={},
                       environ={})
    assert (info.name, info.type, info.entry_point) == ("pkg.train", "LOCAL", "pkg.train")
    package_main = _module("__main__", str(tmp_path / "pkg" / "__main__.py"),
                           spec_name="pkg.__main__")
    assert source_info(argv=["x"], main=package_main, modules={}, environ={}).entry_point == "pkg"


def test_a_notebook_is_detected_by_its_kernel() -> None:
    kernel = {"ipykernel": types.ModuleType("ipykernel")}
    info = source_info(argv=["ipykernel_launcher.py", "-f", "k.json"], main=_module("__main__", None),
                       modules=kernel, environ={"JPY_SESSION_NAME": "/home/a/explore.ipynb"})
    assert (info.name, info.type) == ("/home/a/explore.ipynb", "NOTEBOOK")
    unnamed = source_info(argv=["x"], main=_module("__main__", None), modules=kernel, environ={})
    assert (unnamed.name, unnamed.type) == ("notebook", "NOTEBOOK")


def test_interactive_and_dash_c() -> None:
    main = _module("__main__", None)
    assert source_info(argv=[""], main=main, modules={}, environ={}).name == "<stdin>"
    assert source_info(argv=["-c"], main=main, modules={}, environ={}).name == "<string>"


def test_credentials_are_stripped_from_remote_urls() -> None:
    assert strip_credentials("https://bob:s3cret@git.example.com/x.git") == \
        "https://git.example.com/x.git"
    assert strip_credentials("https://token@github.com/o/r") == "https://github.com/o/r"
    assert strip_credentials("git@github.com:o/r.git") == "git@github.com:o/r.git"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()


@needs_git
def test_git_commit_dirty_flag_and_remote(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "train.py").write_text("print(1)\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    _git(repo, "remote", "add", "origin", "https://user:tok@example.com/team/repo.git")
    head = _git(repo, "rev-parse", "HEAD")

    clean = git_info(repo)
    assert clean.commit == head and clean.dirty is False
    assert clean.remote == "https://example.com/team/repo.git"

    (repo / "notes.txt").write_text("untracked files do not make it dirty")
    assert git_info(repo).dirty is False
    (repo / "train.py").write_text("print(2)\n")
    assert git_info(repo).dirty is True
    sub = repo / "src"
    sub.mkdir()
    assert git_info(sub).commit == head, "found from a subdirectory"


@needs_git
def test_outside_a_repository_nothing_is_captured(tmp_path: Path) -> None:
    assert git_info(tmp_path) == capture.GitInfo()
    assert git_info(None) == capture.GitInfo()
    assert git_info(tmp_path / "missing") == capture.GitInfo()


def test_missing_git_never_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(capture.shutil, "which", lambda name: None)
    assert git_info(tmp_path) == capture.GitInfo()


def test_a_hanging_git_times_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def hang(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(cmd="git", timeout=float(kwargs.get("timeout", 0)))

    monkeypatch.setattr(capture.shutil, "which", lambda name: "/usr/bin/git")
    monkeypatch.setattr(capture.subprocess, "run", hang)
    assert git_info(tmp_path) == capture.GitInfo()


def test_environment_lists_packages_python_and_command_line() -> None:
    env = capture.environment()
    import pydantic

    assert f"pydantic=={pydantic.VERSION}" in env.packages
    assert env.packages == sorted(env.packages, key=str.lower)
    assert all("==" in p for p in env.packages)
    assert env.python_version == ".".join(map(str, sys.version_info[:3]))
    assert env.command_line and env.host and env.user
