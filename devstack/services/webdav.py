"""A real WebDAV server (WsgiDAV from PyPI on cheroot), run from the project's venv."""
from __future__ import annotations

import shutil
import subprocess
import sys

from .config import CACHE, CHEROOT_VERSION, HOST, ROOT, WEBDAV_PORT, WEBDAV_ROOT, WSGIDAV_VERSION, ServiceError
from .endpoints import endpoints
from .process import http_status, run_step, spawn, start, stop


def _venv_python() -> str:
    candidate = ROOT / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def install_webdav() -> None:
    python = _venv_python()
    check = subprocess.run([python, "-c", "import wsgidav, cheroot"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if check.returncode == 0:
        return
    packages = [f"wsgidav=={WSGIDAV_VERSION}", f"cheroot=={CHEROOT_VERSION}"]
    has_pip = subprocess.run([python, "-m", "pip", "--version"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if has_pip:
        argv = [python, "-m", "pip", "install", "--quiet", *packages]
    elif shutil.which("uv"):
        argv = ["uv", "pip", "install", "--python", python, *packages]
    else:
        raise ServiceError(f"webdav needs 'pip' in {python} or 'uv' on PATH to install wsgidav: not found")
    run_step("webdav", "install", argv, timeout=600)


def _launch_webdav() -> int:
    WEBDAV_ROOT.mkdir(parents=True, exist_ok=True)
    return spawn("webdav", [
        _venv_python(), "-m", "wsgidav.server.server_cli",
        "--host", HOST, "--port", str(WEBDAV_PORT), "--root", str(WEBDAV_ROOT),
        "--auth", "anonymous", "--server", "cheroot", "--no-config", "-q",
    ], cwd=CACHE)


def webdav_ready() -> bool:
    return http_status(endpoints()["webdav"] + "/", method="PROPFIND", headers={"Depth": "0"}) == 207


def start_webdav(timeout: float = 30) -> None:
    start("webdav", (WEBDAV_PORT,), install_webdav, _launch_webdav, webdav_ready, timeout)


def stop_webdav() -> bool:
    return stop("webdav")
