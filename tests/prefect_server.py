"""Prefect's test harness, on a port that the test process holds for the server's whole life.

`prefect_test_harness` picks a free port by binding a socket and closing it, and starts the
server on it a few seconds later (the server process imports Prefect first, ~4-15 s on a busy
2-core machine). Another process that binds a port in between (another test session's Prefect
server, a CLI run's pre-started one, a Dask scheduler) can get the same port; the harness's
/health check is then answered by *that* server, the whole session reports to a stranger's API,
and every Prefect test after it fails with "Connection refused" once the stranger exits.

Here the test process binds the socket itself and hands it to the server process (an inherited
file descriptor, uvicorn's `sockets=`), and keeps it bound until the server is stopped: no other
process can take the port, so /health can only be answered by this session's own server.
Everything else (the temporary SQLite database, the settings, log draining) is Prefect's own harness.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

# The server process: uvicorn on the inherited, already bound socket (socket() detects its family).
SERVE = """
import socket, sys, uvicorn
sock = socket.socket(fileno=int(sys.argv[1]))
config = uvicorn.Config("prefect.server.api.server:create_app", factory=True, log_level="error", lifespan="on")
uvicorn.Server(config).run(sockets=[sock])
"""


@contextlib.contextmanager
def held_port_harness(startup_timeout: int) -> Iterator[str]:
    """`prefect_test_harness` whose server listens on a socket bound here; yields the API URL."""
    import prefect.testing.utilities as harness
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, get_current_settings

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # no SO_REUSEADDR: nobody else can bind this port while we hold it
        port = int(sock.getsockname()[1])

        class HeldPortServer(SubprocessASGIServer):
            def find_available_port(self) -> int:  # Prefect versions whose harness asks the server
                return port

            def _run_uvicorn_command(self) -> subprocess.Popen:
                env = {
                    **os.environ,
                    # What Prefect gives its own temporary server (SubprocessASGIServer._run_uvicorn_command).
                    "PREFECT_UI_ENABLED": "0",
                    "PREFECT__SERVER_EPHEMERAL": "1",
                    "PREFECT__SERVER_FINAL": "1",
                    **get_current_settings().to_environment_variables(exclude_unset=True),
                }
                return subprocess.Popen(
                    [sys.executable, "-c", SERVE, str(sock.fileno())], env=env, pass_fds=(sock.fileno(),)
                )

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(harness, "SubprocessASGIServer", HeldPortServer)
            patch.setattr(harness, "_find_available_port", lambda: port, raising=False)
            with harness.prefect_test_harness(server_startup_timeout=startup_timeout):
                url = str(PREFECT_API_URL.value())
                assert url.startswith(f"http://127.0.0.1:{port}/"), url  # the held port, not one picked elsewhere
                yield url
