"""`skyfill dashboard`: a local web page of the jobs in a workdir (or on a Redis server).

Served by the standard library's `ThreadingHTTPServer` in a thread: the dashboard only
reads state stores (blocking SQLite/Redis calls that an event loop would have to push to
threads anyway), serves a handful of local clients, and so needs no extra dependency.

    GET /                     the page (static/dashboard.html, .css, .js: no CDN)
    GET /api/jobs             [{job_id, status, phase, done, total, updated_at, live}]
    GET /api/jobs/<job_id>    {"snapshot": job_snapshot, "series": the recorded timeline}
    GET /report/<job_id>      the job's HTML report, made on request

The page polls `/api/jobs/<job_id>` every 2 s and redraws its SVG charts in place.
"""

from __future__ import annotations

import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from skyfill.errors import UsageError
from skyfill.monitor.report import build_report
from skyfill.monitor.report_html import render_report
from skyfill.monitor.series import series
from skyfill.monitor.snapshot import job_snapshot
from skyfill.monitor.sources import JobSource

log = logging.getLogger(__name__)
STATIC = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


class _SampleCache:
    """Each job's samples read so far: a poll reads only the samples recorded since."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, list[dict[str, Any]]] = {}

    def read(self, job_id: str, store: Any) -> list[dict[str, Any]]:
        with self._lock:
            known = self._samples.setdefault(job_id, [])
            since = known[-1]["t"] if known else None
            fresh = store.samples(since=since)
            if known and fresh and fresh[0]["t"] < known[-1]["t"]:  # the store was reset
                known.clear()
            known.extend(fresh)
            return list(known)


class DashboardServer:
    def __init__(self, source: JobSource, port: int, host: str = "127.0.0.1") -> None:
        self.source = source
        self.samples = _SampleCache()
        handler = type("Handler", (_Handler,), {"dashboard": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UsageError(
                f"cannot serve the dashboard on {host}:{port}: {exc.strerror}"
            ) from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="skyfill-dashboard", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- the API ---------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        listed = []
        for job_id in self.source.job_ids():
            try:
                with self.source.open(job_id) as store:
                    facts = job_snapshot(store)
            except UsageError:
                continue
            listed.append(
                {
                    key: facts.get(key)
                    for key in ("job_id", "status", "phase", "done", "total", "updated_at")
                }
                | {"live": (facts.get("runner") or {}).get("live", False)}
            )
        return sorted(listed, key=lambda j: -(j["updated_at"] or 0))

    def job(self, job_id: str) -> dict[str, Any]:
        with self.source.open(job_id) as store:
            snapshot = job_snapshot(store)
            samples = self.samples.read(job_id, store)
        snapshot["now"] = time.time()
        return {"snapshot": snapshot, "series": series(samples)}

    def report(self, job_id: str) -> str:
        with self.source.open(job_id) as store:
            return render_report(build_report(store, self.source.layout(job_id)))


class _Handler(BaseHTTPRequestHandler):
    dashboard: DashboardServer
    server_version = "skyfill-dashboard"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path in STATIC:
                name, kind = STATIC[path]
                body = resources.files("skyfill.monitor").joinpath("static", name).read_bytes()
                self._send(HTTPStatus.OK, body, kind)
            elif path == "/api/jobs":
                self._json(self.dashboard.jobs())
            elif path.startswith("/api/jobs/"):
                self._json(self.dashboard.job(unquote(path.removeprefix("/api/jobs/"))))
            elif path.startswith("/report/"):
                html = self.dashboard.report(unquote(path.removeprefix("/report/")))
                self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")
            else:
                self._json({"error": f"no such page: {path}"}, HTTPStatus.NOT_FOUND)
        except UsageError as exc:
            self._json({"error": str(exc)}, HTTPStatus.NOT_FOUND)
        except Exception as exc:  # a broken store must not kill the server
            log.warning("dashboard %s: %s", path, exc, extra={"event": "dashboard_error"})
            self._json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, orjson.dumps(data, default=str), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args, extra={"event": "dashboard_request"})
