"""Run the conformance AgentServer app with uvicorn on 127.0.0.1 and an ephemeral port.

The socket is bound here (port 0) and handed to uvicorn, so there is no race for a free port;
the first stdout line is the base URL.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import mlflow
import uvicorn
from agent_app import app  # this directory is on sys.path when run as a script


def main() -> None:
    # Create the tracking store's tables now, not on the first traced request.
    mlflow.MlflowClient().search_experiments(max_results=1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    sys.stdout.write(f"http://127.0.0.1:{port}\n")
    sys.stdout.flush()
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    main()
