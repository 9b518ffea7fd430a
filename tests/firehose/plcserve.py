"""A PLC directory for a firehose recording: `GET /<did>` answers the file `DIR/<did>`
(firehose.mjs's `plc/`), as staticnet's nginx PLC does, without nginx or fixed ports.

    python plcserve.py DIR --port P

Stdlib only, so it runs under any Python. Prints one ready line on stdout
(`{"ready": true, "url": ...}`) and serves until SIGTERM. An unknown DID gets 404
`{"message": "DID not registered: <did>"}`, like the PLC.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import unquote

DID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:._-%")


def handler_for(directory: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as plc.directory: no connection per DID
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK wait

        def do_GET(self) -> None:
            did = unquote(self.path.split("?", 1)[0].lstrip("/"))
            doc = directory / did
            if did.startswith("did:") and set(did) <= DID_CHARS and doc.is_file():
                self._send(200, doc.read_bytes(), "application/did+ld+json")
                return
            body = json.dumps({"message": f"DID not registered: {did}"}).encode()
            self._send(404, body, "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(args.dir))
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"ready": True, "url": f"http://127.0.0.1:{args.port}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
