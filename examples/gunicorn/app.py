"""A WSGI app for running gunicorn under sockshim.

It reads its version from the VERSION file next to it when it is imported,
that is when a sockshim worker (a gunicorn master started with --preload)
starts: code and data loaded at worker start are what a reload refreshes.
"""
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "VERSION"), encoding="utf-8") as f:
    VERSION = f.read().strip()
GENERATION = os.environ.get("SOCKSHIM_GENERATION", "")
WORKER = os.environ.get("SOCKSHIM_WORKER_ID", "")


def application(environ, start_response):
    body = f"version={VERSION} generation={GENERATION} worker={WORKER} pid={os.getpid()}\n".encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("X-Version", VERSION),
        ("X-Generation", GENERATION),
        ("X-Worker", WORKER),
        ("X-Pid", str(os.getpid())),
    ])
    return [body]
