"""A static file server on 127.0.0.1 that honours HTTP ``Range`` and can cut connections, for the data
download tests. Run as ``python -m tests.rangeserver ROOT [--cut-after N] [--no-range]``: it prints its
port on the first stdout line and serves until killed. Every request is appended to ``ROOT/../requests.log``
as ``<path> <Range header or ->`` so tests can check what the client asked for.

``--cut-after N``: the first response of each file sends N bytes, then closes the connection mid-body
(a dropped download); later responses are whole. ``--no-range``: ignore ``Range`` (always 200, whole file).
"""

from __future__ import annotations

import argparse
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--cut-after", type=int, default=0)
    ap.add_argument("--no-range", action="store_true")
    args = ap.parse_args()
    root = args.root.resolve()
    log = root.parent / "requests.log"
    cut_done: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            with open(log, "a") as fh:
                fh.write(f"{self.path} {rng or '-'}\n")
            path = (root / self.path.lstrip("/")).resolve()
            if root not in path.parents or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start, status = 0, 200
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if m and not args.no_range:
                start = int(m.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if args.cut_after and self.path not in cut_done:
                cut_done.add(self.path)
                self.wfile.write(body[: args.cut_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the client sees the body end early
                return
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
