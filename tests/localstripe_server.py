"""localstripe (the dev dependency: a stateful Stripe stand-in) for the payment tests, started from the
installed package:

    python tests/localstripe_server.py        prints the port it listens on, then serves until killed

Not `localstripe` itself: that listens on every interface, on a fixed port (8420), and pickles its whole
store to one fixed file (/tmp/localstripe.pickle) on every write, so test runs side by side would share
ports and data. This one binds 127.0.0.1 on a port the system picks and keeps the store in memory.
"""

from __future__ import annotations

import logging
import socket
import sys

from aiohttp import web
from localstripe import resources, server


def main() -> None:
    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    resources.Store.try_load_from_disk = lambda self: None  # type: ignore[method-assign]
    logging.basicConfig(level=logging.WARNING)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # the port is ours from here on: no race with other runs for a "free" one
    print(sock.getsockname()[1], flush=True)
    web.run_app(server.app, sock=sock, print=None, handle_signals=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
