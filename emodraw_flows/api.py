"""Start Prefect's temporary API server early, without importing Prefect in this process.

`emodraw-batch run` needs a Prefect API. When none is configured, Prefect starts a temporary
server in a subprocess (`SubprocessASGIServer`), but only when the first flow starts, after
this process has imported torch, transformers and Prefect and loaded the model, and it first
imports the whole server stack (FastAPI, SQLAlchemy, every route: 3.4 s alone on a 2-core machine)
into this process just to launch that subprocess. `prestart()` launches the very same command
(`python -m uvicorn prefect.server.api.server:create_app`, the environment Prefect gives it)
as the first thing the CLI does, so the server's start (~3.5 s alone) runs on the other core while
this process validates the inputs, imports and loads the model; `url()` then waits for it.
This module imports nothing heavy.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

_server: subprocess.Popen | None = None
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
_port: int | None = None
SHUTDOWN_S = 5.0  # the server's graceful shutdown at most
# The temporary server skips block auto-registration: to hash the block registry it first imports
# every installed Prefect collection (prefect-dask, hence dask.distributed: ~0.6 s of CPU on 2 cores,
# taken from the model while the run labels its first window), and a run uses no blocks. A server
# started with `prefect server start` still registers them. Set either variable to override.
NO_BLOCK_REGISTRATION = {"PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "0", "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "0"}


def _api_url_configured() -> bool:
    """PREFECT_API_URL set in the environment or (conservatively: anywhere) in the Prefect profiles file."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        return "PREFECT_API_URL" in profiles.read_text()
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Any:
    """A `preexec_fn` that makes the server end when this process dies, whatever the signal (Linux).

    Without it a run killed by SIGKILL (the OOM killer, a scheduler's timeout) leaves the server,
    ~200 MB, running under pid 1 for good: `atexit` never runs then. The kernel sends the child
    SIGTERM when the thread that started it ends, so `prestart` must be called from the main
    thread (the CLI does). Elsewhere (macOS) there is no such call: the server is stopped at exit
    and on the signals Python handles, but not after a SIGKILL of the run. libc is resolved here,
    in the parent: the child, between fork and exec, only makes the call.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody would send the signal
            os._exit(0)

    return child


def prestart() -> None:
    """Launch the temporary server now, unless an API is configured; returns at once."""
    global _server, _port

    if _server is not None or _api_url_configured():
        return
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.origin:
        return
    _port = _free_port()
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           **{k: os.environ.get(k, v) for k, v in NO_BLOCK_REGISTRATION.items()}}
    _server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(_port),
         "--log-level", "error", "--lifespan", "on"],
        env=env,
        preexec_fn=_die_with_parent(),  # noqa: PLW1509 - called first thing, from the main thread
    )
    atexit.register(stop, wait=False)


def url(timeout: float) -> str | None:
    """The pre-started server's API URL once it answers /health; None if none was started or it failed."""
    global _server
    if _server is None:
        return None
    api = f"http://127.0.0.1:{_port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _server.poll() is not None:  # exited (e.g. the port was taken): let Prefect start its own
            _server = None
            return None
        try:
            with _direct.open(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return api
        except OSError:
            pass
        time.sleep(0.05)
    stop()
    return None


def stop(wait: bool = True) -> None:
    """SIGTERM to the server; with `wait`, until it has ended (killed after SHUTDOWN_S).

    At exit the process does not wait: uvicorn's graceful shutdown (Prefect's services flush their
    events) took 0.27 s of every run's end on 2 cores (bench/startup.py, issue 39 item 3); the server
    ends on its own (and a server still importing ends at once: SIGTERM's default action).
    """
    global _server
    if _server is None:
        return
    _server.terminate()
    if wait:
        try:
            _server.wait(timeout=SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            _server.kill()
            _server.wait()
    _server = None
