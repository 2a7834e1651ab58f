#!/usr/bin/env python3
"""Counting HTTP proxy for scripts/bench.sh.

    proxy.py --upstream http://127.0.0.1:MOTO_PORT [--port 0] [--port-file F]

Listens on 127.0.0.1, forwards every request unchanged (method, path, query,
headers including Host, body) to the upstream S3 endpoint, and counts
requests by S3 operation, inferred from method + query + headers. Only
loopback upstreams are accepted: the benchmark must never leave the machine.

Control endpoints (never forwarded; bucket names cannot contain "_"):
    GET  /__proxy/counts   {"ops": {op: n}, "errors": {op: n}, "total": n}
    POST /__proxy/reset    zero the counters
"""

import argparse
import http.client
import http.server
import json
import socketserver
import sys
import threading
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


def classify(method, path, query, headers):
    """The S3 operation a request is, from method, path, query and headers."""
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    has_key = len(parts) == 2 and parts[1] != ""
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method}Service"
    copy_source = "x-amz-copy-source" in headers
    if not has_key:
        if method == "GET":
            if q.get("list-type") == ["2"]:
                return "ListObjectsV2"
            if "versions" in q:
                return "ListObjectVersions"
            if "uploads" in q:
                return "ListMultipartUploads"
            sub = [k for k in q if k not in ("prefix", "delimiter", "marker", "max-keys", "encoding-type")]
            if sub:
                return "GetBucket" + sub[0][:1].upper() + sub[0][1:]
            return "ListObjects"
        if method == "HEAD":
            return "HeadBucket"
        if method == "PUT":
            if not q:
                return "CreateBucket"
            sub = next(iter(q))
            return "PutBucket" + sub[:1].upper() + sub[1:]
        if method == "DELETE":
            return "DeleteBucket"
        if method == "POST" and "delete" in q:
            return "DeleteObjects"
        return f"{method}Bucket"
    if method == "PUT":
        if copy_source and "partNumber" in q:
            return "UploadPartCopy"
        if copy_source:
            return "CopyObject"
        if "partNumber" in q:
            return "UploadPart"
        if "tagging" in q:
            return "PutObjectTagging"
        if "acl" in q:
            return "PutObjectAcl"
        return "PutObject"
    if method == "POST":
        if "uploads" in q:
            return "CreateMultipartUpload"
        if "uploadId" in q:
            return "CompleteMultipartUpload"
        return "PostObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "GET":
        if "tagging" in q:
            return "GetObjectTagging"
        if "acl" in q:
            return "GetObjectAcl"
        if "uploadId" in q:
            return "ListParts"
        if "attributes" in q:
            return "GetObjectAttributes"
        return "GetObject"
    return f"{method}Object"


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.ops, self.errors, self.bytes_in, self.bytes_out = {}, {}, 0, 0

    def add(self, op, status, n_in, n_out):
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1
            if status >= 400:
                self.errors[op] = self.errors.get(op, 0) + 1
            self.bytes_in += n_in
            self.bytes_out += n_out

    def snapshot(self):
        with self.lock:
            return {
                "ops": dict(sorted(self.ops.items())),
                "errors": dict(sorted(self.errors.items())),
                "total": sum(self.ops.values()),
                "bytes_from_clients": self.bytes_in,
                "bytes_to_clients": self.bytes_out,
            }


COUNTERS = Counters()
UPSTREAM = ("127.0.0.1", 0)
LOCAL = threading.local()


def upstream_conn(fresh=False):
    conn = getattr(LOCAL, "conn", None)
    if conn is None or fresh:
        if conn is not None:
            conn.close()
        conn = http.client.HTTPConnection(*UPSTREAM, timeout=600)
        LOCAL.conn = conn
    return conn


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue handling

    def log_message(self, *args):
        pass

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks), True
        length = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(length) if length else b""), False

    def _reply_json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        if path.startswith("/__proxy/"):
            self._read_body()
            if path == "/__proxy/reset":
                COUNTERS.reset()
            return self._reply_json(COUNTERS.snapshot())
        body, chunked = self._read_body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        if chunked:
            # Re-sent as one chunk: the same framing the client chose.
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
            headers.append(("Transfer-Encoding", "chunked"))
        lower = {k.lower() for k, _ in headers}
        op = classify(self.command, urllib.parse.unquote(path), split.query, lower)
        for attempt in (0, 1):
            conn = upstream_conn(fresh=attempt == 1)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders()
                if chunked:
                    if body:
                        conn.send(b"%x\r\n%s\r\n" % (len(body), body))
                    conn.send(b"0\r\n\r\n")
                elif body:
                    conn.send(body)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                if attempt == 1:
                    COUNTERS.add(op, 502, len(body), 0)
                    self.send_error(502, "upstream failed")
                    return
        self.send_response_only(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP or k.lower() in ("transfer-encoding", "content-length"):
                continue
            self.send_header(k, v)
        if self.command == "HEAD":
            length = resp.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        COUNTERS.add(op, resp.status, len(body), len(data))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    global UPSTREAM
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()
    up = urllib.parse.urlsplit(args.upstream)
    if up.hostname not in ("127.0.0.1", "localhost") or up.scheme != "http":
        sys.exit(f"proxy.py: refusing non-loopback upstream {args.upstream}")
    UPSTREAM = ("127.0.0.1", up.port or 80)
    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            print(port, file=f)
        import os

        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"proxy.py: 127.0.0.1:{port} -> {args.upstream}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
