"""The compose stack's span route: to the tail-sampling Jaeger when ``--profile tail`` runs it.

docker compose cannot set a variable by profile, and ``--profile tail`` only adds the service
``jaeger-tail``; so docker-compose.yml gives the app services both routes: OTEL_EXPORTER_OTLP_ENDPOINT (the
plain ``jaeger``) and TAIL_OTLP_ENDPOINT (``jaeger-tail``), and starts them through this module
(``python -m workflows._compose COMMAND...``) once jaeger-tail is healthy, when it runs at all. Its name
resolves on the compose network only while it runs: then the spans go there, and JAEGER_QUERY_URL becomes
TAIL_JAEGER_QUERY_URL, the tail Jaeger's UI, for the links ``tracehook send`` prints (it applies the same
route). Outside compose neither variable is set and nothing changes.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from urllib.parse import urlsplit

__all__ = ["main", "tail_route"]


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def tail_route(env: Mapping[str, str], resolves: Callable[[str], bool] = _resolves) -> dict[str, str]:
    """The variables to change so spans go to the tail Jaeger: none unless TAIL_OTLP_ENDPOINT is set and its
    host resolves (the tail Jaeger runs)."""
    endpoint = env.get("TAIL_OTLP_ENDPOINT", "").strip()
    host = urlsplit(endpoint).hostname if endpoint else None
    if not host or not resolves(host):
        return {}
    routed = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    query_url = env.get("TAIL_JAEGER_QUERY_URL", "").strip()
    if query_url:
        routed["JAEGER_QUERY_URL"] = query_url
    return routed


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``argv`` (this process's arguments by default) in place of this process, on the tail route
    when it applies."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        sys.exit("usage: python -m workflows._compose COMMAND [ARG...]")
    os.environ.update(tail_route(os.environ))
    os.execvp(command[0], command)  # noqa: S606  # the compose file's own command


if __name__ == "__main__":
    main()
