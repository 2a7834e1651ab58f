#!/usr/bin/env python3
"""Counting HTTP proxy for scripts/bench.sh.

    proxy.py --upstream http://127.0.0.1:PORT [--port 0] [--port-file F] [--latency-ms 0]
             [--kms-bucket NAME ...] [--copy-limit-source NAME ...] [--copy-limit-bytes N]

Listens on 127.0.0.1, forwards every request as it came (method, path,
query, headers including Host, body; only per-connection headers such as
Connection and Expect are dropped, so signatures stay valid) to the upstream
S3 endpoint, and counts requests by S3 operation, inferred from method +
query + headers. Only loopback upstreams are accepted: the benchmark must
never leave the machine.

Its cost per request matters on a small machine, where it shares the CPU
with the server it measures: messages are relayed as raw bytes on keep-alive
connections with TCP_NODELAY (about 0.25 ms of CPU per request here, against
0.6-1 ms for an http.server/http.client relay, whose separate header and
body writes also met delayed ACKs: 40 ms stalls at low concurrency). An
answer over 1 MiB with a Content-Length (a GetObject) is relayed as it
arrives, a MiB at a time, not read whole first: a tool that downloads whole
objects would otherwise wait for each one twice, and the proxy hold them all.

--latency-ms N holds every S3 request N ms (after its body is read, before
it is forwarded) to mimic a real region's round trip; control endpoints are
answered at once. Each client connection has its own thread, so the delay
adds to every request's latency without serializing concurrent requests.

--kms-bucket NAME (repeatable) gives the objects of bucket NAME SSE-KMS
ETags, which are not MD5s, as on S3 (see kms_etags.py): listings, HEAD,
GET, PUT, CopyObject and CompleteMultipartUpload answers are rewritten, and
conditions naming such ETags translated for the server. Those answers are
read whole and sent again with a Content-Length; every other message keeps
the raw path and its cost. Measured here against a stub server (best of
five): a rewritten HEAD or CopyObject answer costs 0.01-0.07 ms more, a
rewritten listing page of 1,000 objects 5.5 ms of CPU against 0.2-0.3 ms
relayed raw.

--copy-limit-source NAME (repeatable) makes CopyObject from bucket NAME
refuse a source over --copy-limit-bytes (5 GiB, 5368709120), as S3 does:
"You create a copy of your object up to 5 GB in size in a single atomic
action using this API. However, to copy an object greater than 5 GB, you
must use the multipart upload Upload Part - Copy (UploadPartCopy) API"
(https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html).
moto and Garage copy any size, so a tool that copies a 6 GiB object with
one CopyObject would pass here and fail on S3. The proxy HEADs the source
(signed as the client's request, not counted) and answers S3's 400
InvalidRequest itself when it is over the limit. Only the buckets named are
checked: a HEAD per copy of the small-object scenarios would load the server
being measured, and their objects are far from the limit. A smoke run
lowers the limit to prove the check with small objects.

--control-upstream URL sends every request signed for a service other than
S3 (the credential scope of its SigV4 Authorization header names the
service) to a second loopback server: the serverless runtime's SQS,
DynamoDB and Step Functions on moto, while its S3 traffic, the run's folder
included, goes to the S3 server measured (scripts/bench-serverless.sh).
They are counted as "<service>:<operation>" (from X-Amz-Target, or the
query API's Action) and held --latency-ms too: a region's round trip is the
same for every service.

Control endpoints (never forwarded; bucket names cannot contain "_"):
    GET  /__proxy/counts   {"ops": {op: n}, "errors": {op: n}, "total": n, "latency_ms": n,
                            "proxy_cpu_s": s, ...}
    POST /__proxy/reset    zero the counters
"""

import argparse
import gzip
import json
import os
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import zlib

import kms_etags


def signed_service(headers):
    """The service a SigV4 request is signed for: the fourth field of its
    credential scope, "Credential=KEY/DATE/REGION/SERVICE/aws4_request"
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html).
    Unsigned or presigned requests count as S3's."""
    auth = headers.get(b"authorization", b"")
    _, found, scope = auth.partition(b"Credential=")
    fields = scope.split(b",", 1)[0].split(b"/")
    return fields[3].decode("latin-1") if found and len(fields) >= 5 else "s3"


def control_operation(headers, query, body):
    """A non-S3 request's operation: the JSON protocols' X-Amz-Target
    ("AmazonSQS.SendMessageBatch"), or the query protocol's Action."""
    target = headers.get(b"x-amz-target")
    if target:
        return target.decode("latin-1").rpartition(".")[2]
    form = urllib.parse.parse_qs(query or body.decode("latin-1", "replace"))
    return (form.get("Action") or ["Unknown"])[0]


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
            self.cpu_start = time.process_time()

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
                # The proxy's own CPU time since the reset: what relaying (and
                # emulating) took from the cores the run shares.
                "proxy_cpu_s": round(time.process_time() - self.cpu_start, 3),
            }


COUNTERS = Counters()
UPSTREAM = ("127.0.0.1", 0)
CONTROL_UPSTREAM = None  # --control-upstream: (host, port) for non-S3 services
LATENCY_S = 0.0
KMS_BUCKETS = frozenset()
# --trace FILE: one line per request (ms since start, operation, status,
# wall ms, path?query), the timeline to profile a run by.
TRACE = None
TRACE_LOCK = threading.Lock()
STARTED = time.monotonic()
# For requests the KMS emulation must sign again (kms_etags.py): the
# benchmark's own server credentials, which bench.sh exports.
SECRET_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
MAX_LINE = 64 * 1024
# Answers with a longer body are relayed as they arrive, a piece at a time.
STREAM_OVER = 1024 * 1024
# --copy-limit-source, --copy-limit-bytes: CopyObject's limit on its source.
COPY_LIMIT_SOURCES = frozenset()
COPY_LIMIT = 5 * 1024**3
# Dropped when forwarding a message: they describe one connection, and the
# proxy keeps its own on each side (keep-alive, 100-continue answered here).
DROP = {b"connection", b"keep-alive", b"proxy-connection", b"expect", b"te", b"upgrade"}


class BadMessage(Exception):
    pass


class BrokenRelay(Exception):
    """An answer failed after part of it went to the client: the client
    connection must close (sending the answer again would corrupt it)."""


def read_head(rfile):
    """Start line and raw header lines of the next message; None at a clean EOF."""
    lines = []
    while True:
        line = rfile.readline(MAX_LINE)
        if not line:
            if lines:
                raise BadMessage("connection closed inside a message head")
            return None
        if line in (b"\r\n", b"\n"):
            if lines:
                return lines
            continue  # stray CRLF between messages
        lines.append(line)


def header_map(lines):
    out = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        out[name.strip().lower()] = value.strip()
    return out


def read_body(rfile, headers):
    """The body as it came on the wire (chunked framing kept), and its payload size."""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        raw, size = [], 0
        while True:
            line = rfile.readline(MAX_LINE)
            if not line:
                raise BadMessage("connection closed inside a chunked body")
            raw.append(line)
            n = int(line.split(b";")[0].strip(), 16)
            if n == 0:
                while True:  # trailers, then the blank line
                    line = rfile.readline(MAX_LINE)
                    raw.append(line)
                    if line in (b"\r\n", b"\n", b""):
                        return b"".join(raw), size
            data = rfile.read(n + 2)  # the chunk and its CRLF
            if len(data) < n + 2:
                raise BadMessage("connection closed inside a chunk")
            raw.append(data)
            size += n
    n = int(headers.get(b"content-length", b"0") or 0)
    data = rfile.read(n) if n else b""
    if len(data) < n:
        raise BadMessage("connection closed inside a body")
    return data, n


def forwarded_head(lines):
    kept = [lines[0]] + [line for line in lines[1:] if line.partition(b":")[0].strip().lower() not in DROP]
    return b"".join(kept) + b"\r\n"


class Upstream:
    """This thread's keep-alive connection to the server."""

    def __init__(self, address=None):
        self.sock = socket.create_connection(address or UPSTREAM, timeout=600)
        # Without it, Nagle's algorithm and the server's delayed ACK can hold
        # a small write ~40 ms: latency nobody asked for.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.reusable = True

    def close(self):
        self.rfile.close()
        self.sock.close()

    def exchange(self, method, message, stream_to=None):
        """Send one request; the response's status, raw head lines, raw body,
        payload size, and whether its end was the server closing. With
        STREAM_TO (a socket), a body over STREAM_OVER with a Content-Length
        is sent there with its head as it arrives, and the body returned is
        None."""
        self.sock.sendall(message)
        while True:
            lines = read_head(self.rfile)
            if lines is None:
                raise ConnectionError("upstream closed the connection")
            status = int(lines[0].split(b" ", 2)[1])
            if status >= 200 or status == 101:
                break  # 1xx (100 Continue) are interim: the final answer follows
        headers = header_map(lines)
        if headers.get(b"connection", b"").lower() == b"close":
            self.reusable = False
        if method == b"HEAD" or status in (204, 304) or status < 200:
            return status, lines, b"", 0, False
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        length = int(headers.get(b"content-length", b"0") or 0)
        if stream_to is not None and not chunked and length > STREAM_OVER:
            try:
                stream_to.sendall(forwarded_head(lines))
                left = length
                while left:
                    piece = self.rfile.read(min(left, STREAM_OVER))
                    if not piece:
                        raise BadMessage("connection closed inside a body")
                    stream_to.sendall(piece)
                    left -= len(piece)
            except (OSError, BadMessage) as e:
                self.reusable = False
                raise BrokenRelay(e) from e
            return status, lines, None, length, False
        if chunked or b"content-length" in headers:
            body, size = read_body(self.rfile, headers)
            return status, lines, body, size, False
        self.reusable = False
        body = self.rfile.read()
        return status, lines, body, len(body), True


LISTINGS = ("ListObjectsV2", "ListObjects", "ListObjectVersions")
# Framing and encoding of a body the proxy rewrites: it sends the payload
# again, whole, with a Content-Length of its own.
REFRAMED = {b"content-length", b"transfer-encoding", b"content-encoding"}


def _message(status, reason, body, content_type=None):
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())
    if content_type:
        head += b"Content-Type: %s\r\n" % content_type.encode()
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


COPY_TOO_LARGE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRequest</Code>'
    "<Message>The specified copy source is larger than the maximum allowable size for a copy source: %d</Message>"
    "<RequestId>BENCHPROXY</RequestId><HostId>bench-proxy</HostId></Error>"
)


def dechunk(raw):
    """The payload of a body in chunked framing (trailers dropped)."""
    out, pos = [], 0
    while True:
        end = raw.index(b"\r\n", pos)
        n = int(raw[pos:end].split(b";")[0].strip(), 16)
        if n == 0:
            return b"".join(out)
        out.append(raw[end + 2:end + 2 + n])
        pos = end + 2 + n + 2


def _header_settler(bucket, key):
    def settle(status, rlines, rbody, rsize):
        if status in (200, 206, 304):
            rlines = kms_etags.rewrite_etag_header(rlines, bucket, key)
        return rlines, rbody, rsize

    return settle


def _body_settler(rewrite, head=lambda lines: lines):
    """Settles a 200 answer by REWRITE of its whole payload, framed again,
    and HEAD of its head lines."""

    def settle(status, rlines, rbody, rsize):
        if status != 200 or not rbody:
            return rlines, rbody, rsize
        headers = header_map(rlines)
        payload = dechunk(rbody) if b"chunked" in headers.get(b"transfer-encoding", b"").lower() else rbody
        encoding = headers.get(b"content-encoding", b"identity").lower()
        if encoding in (b"gzip", b"x-gzip"):
            payload = gzip.decompress(payload)
        elif encoding == b"deflate":
            payload = zlib.decompress(payload)
        elif encoding not in (b"identity", b""):
            raise BadMessage(f"KMS emulation: cannot rewrite a {encoding.decode()} body")
        payload = rewrite(payload)
        kept = [line for line in rlines if line.partition(b":")[0].strip().lower() not in REFRAMED]
        return head(kept) + [b"Content-Length: %d\r\n" % len(payload)], payload, len(payload)

    return settle


class Handler(socketserver.StreamRequestHandler):
    """HTTP/1.1 keep-alive connections, relayed message by message: heads and
    bodies are forwarded as they came (minus per-connection headers), parsed
    only as far as framing and the operation need. Cheaper than http.server
    and http.client by several times, which matters on a 2-core machine where
    the proxy shares the CPU with the server it measures."""

    disable_nagle_algorithm = True
    timeout = 600

    def handle(self):
        upstream = None
        try:
            while True:
                lines = read_head(self.rfile)
                if lines is None:
                    return
                method, target, version = lines[0].rstrip(b"\r\n").split(b" ", 2)
                headers = header_map(lines)
                if headers.get(b"expect", b"").lower() == b"100-continue":
                    self.connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body, size = read_body(self.rfile, headers)
                close = headers.get(b"connection", b"").lower() == b"close" or version == b"HTTP/1.0"
                split = urllib.parse.urlsplit(target.decode("latin-1"))
                if split.path.startswith("/__proxy/"):
                    if split.path == "/__proxy/reset":
                        COUNTERS.reset()
                    self._reply_json({**COUNTERS.snapshot(), "latency_ms": round(LATENCY_S * 1000)})
                else:
                    upstream = self._relay(upstream, method, split, lines, headers, body, size)
                if close or upstream is False:
                    return
        except (BadMessage, ValueError, IndexError):
            self.connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except (OSError, BrokenRelay):
            pass  # client went away, or an answer broke off halfway
        finally:
            if upstream:
                upstream.close()
            if getattr(self, "control", None):
                self.control.close()

    def _relay(self, upstream, method, split, lines, headers, body, size):
        """Forward one request and its answer; the upstream connection to keep,
        None if there is none to keep, False if the client connection must close."""
        names = {k.decode("latin-1") for k in headers}
        path = urllib.parse.unquote(split.path)
        service = signed_service(headers) if CONTROL_UPSTREAM else "s3"
        if service != "s3":
            return self._relay_control(upstream, service, method, split, lines, headers, body, size)
        op = classify(method.decode("latin-1"), path, split.query, names)
        began = time.monotonic()
        if LATENCY_S:
            time.sleep(LATENCY_S)  # releases the GIL: other connections' threads go on
        settle = answer = None
        if op == "CopyObject" and COPY_LIMIT_SOURCES:
            upstream, answer = self._copy_limit(upstream, headers)
        if KMS_BUCKETS and answer is None:
            upstream, lines, settle, answer = self._kms_prepare(upstream, op, path, split.query, lines, headers)
        if answer is not None:
            status, data = answer
            COUNTERS.add(op, status, size, 0)
            self.connection.sendall(data)
            return upstream
        message = forwarded_head(lines) + body  # one send: head and body together
        # An answer to rewrite is read whole; any other may go as it comes.
        upstream, answer = self._send(upstream, method, message, None if settle else self.connection)
        if answer is None:
            COUNTERS.add(op, 502, size, 0)
            self.connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return None
        status, rlines, rbody, rsize, until_close = answer
        if settle:
            try:
                rlines, rbody, rsize = settle(status, rlines, rbody, rsize)
            except (BadMessage, ValueError, OSError, zlib.error) as e:
                # The client must not see the server's real ETags as if they
                # were the emulation's: it gets an error instead.
                print(f"proxy.py: {op}: {e}", file=sys.stderr, flush=True)
                status, rlines, rbody = 502, [b"HTTP/1.1 502 Bad Gateway\r\n", b"Content-Length: 0\r\n"], b""
                rsize = 0
        COUNTERS.add(op, status, size, rsize)
        if rbody is not None:  # None: streamed already
            self.connection.sendall(forwarded_head(rlines) + rbody)
        if TRACE:
            line = (f"{(began - STARTED) * 1000:.1f}\t{op}\t{status}\t"
                    f"{(time.monotonic() - began) * 1000:.1f}\t{path}?{split.query}\n")
            with TRACE_LOCK:
                TRACE.write(line)
                TRACE.flush()
        if upstream.reusable:
            return upstream
        upstream.close()
        # A body that ended with the server's close ends with ours too.
        return False if until_close else None

    def _relay_control(self, upstream, service, method, split, lines, headers, body, size):
        """Forward a request for another service to --control-upstream, on
        this client connection's own connection there; the S3 connection
        (UPSTREAM) is kept as it was."""
        op = f"{service}:{control_operation(headers, split.query, body)}"
        began = time.monotonic()
        if LATENCY_S:
            time.sleep(LATENCY_S)
        control = getattr(self, "control", None)
        control, answer = self._send(control, method, forwarded_head(lines) + body, None, CONTROL_UPSTREAM)
        self.control = control
        if answer is None:
            COUNTERS.add(op, 502, size, 0)
            self.connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return upstream
        status, rlines, rbody, rsize, until_close = answer
        COUNTERS.add(op, status, size, rsize)
        self.connection.sendall(forwarded_head(rlines) + rbody)
        if TRACE:
            line = f"{(began - STARTED) * 1000:.1f}\t{op}\t{status}\t{(time.monotonic() - began) * 1000:.1f}\t{split.path}\n"
            with TRACE_LOCK:
                TRACE.write(line)
                TRACE.flush()
        if not control.reusable:
            control.close()
            self.control = None
        return False if until_close else upstream

    @staticmethod
    def _send(upstream, method, message, stream_to=None, address=None):
        """Send one request to the server, once more on a new connection when
        the kept-alive one fails (the server closed it meanwhile): the
        connection and the answer, (None, None) when both attempts failed.
        A long answer goes to STREAM_TO as it comes (Upstream.exchange); one
        that breaks off then is not sent again (BrokenRelay)."""
        for attempt in (0, 1):
            try:
                if upstream is None or attempt == 1 or not upstream.reusable:
                    if upstream:
                        upstream.close()
                    upstream = None
                    upstream = Upstream(address)
                return upstream, upstream.exchange(method, message, stream_to)
            except BrokenRelay:
                upstream.close()
                raise
            except (OSError, BadMessage, ValueError, IndexError):
                pass
        if upstream:
            upstream.close()
        return None, None

    def _copy_limit(self, upstream, headers):
        """S3's limit on CopyObject's source (--copy-limit-source): the
        upstream connection, and S3's 400 answer ((status, raw message)) when
        the source is over --copy-limit-bytes, else None."""
        source = headers.get(b"x-amz-copy-source", b"").decode("latin-1")
        sbucket, skey, sversion = kms_etags.copy_source(source)
        if sbucket not in COPY_LIMIT_SOURCES:
            return upstream, None
        credentials = kms_etags.Credentials(headers.get(b"authorization", b"").decode("latin-1"), SECRET_KEY)
        request = kms_etags.head_request(headers.get(b"host", b"").decode("latin-1"), sbucket, skey, sversion,
                                         credentials, headers.get(b"x-amz-date", b"").decode("latin-1"))
        upstream, answer = self._send(upstream, b"HEAD", request)
        if answer is None or answer[0] != 200:
            return upstream, None  # no such source, or no answer: the server says so itself
        size = int(header_map(answer[1]).get(b"content-length", b"0") or 0)
        if size <= COPY_LIMIT:
            return upstream, None
        # S3's answer there: 400 InvalidRequest, with the limit in its message.
        body = (COPY_TOO_LARGE % COPY_LIMIT).encode()
        return upstream, (400, _message(400, "Bad Request", body, "application/xml"))

    def _kms_prepare(self, upstream, op, path, query, lines, headers):
        """The KMS emulation's part before forwarding: the upstream connection,
        the request head to send (conditions in the server's terms), how to
        settle the answer (None: relay it as it is), and an answer of the
        proxy's own ((status, raw message)) when the request goes no further."""
        bucket, _, key = path.lstrip("/").partition("/")
        settle = None
        if bucket in KMS_BUCKETS:
            if op in LISTINGS:
                url = "encoding-type=url" in query
                settle = _body_settler(lambda xml: kms_etags.rewrite_listing(xml, bucket, url))
            elif key and op in ("HeadObject", "GetObject", "PutObject"):
                settle = _header_settler(bucket, key)
            elif key and op in ("CopyObject", "CompleteMultipartUpload"):
                settle = _body_settler(lambda xml: kms_etags.rewrite_result(xml, bucket, key), kms_etags.kms_head)
        # Conditions: (header, its name in S3's error, bucket, key, version, If-None-Match?).
        checks = []
        if bucket in KMS_BUCKETS and key:
            version = urllib.parse.parse_qs(query).get("versionId", [None])[0]
            if b"if-match" in headers:
                checks.append(("if-match", "If-Match", bucket, key, version, False))
            if b"if-none-match" in headers and op in ("HeadObject", "GetObject"):
                checks.append(("if-none-match", "If-None-Match", bucket, key, version, True))
        source = headers.get(b"x-amz-copy-source")
        if source and (b"x-amz-copy-source-if-match" in headers or b"x-amz-copy-source-if-none-match" in headers):
            sbucket, skey, sversion = kms_etags.copy_source(source.decode("latin-1"))
            if sbucket in KMS_BUCKETS:
                for name, none in (("if-match", False), ("if-none-match", True)):
                    if b"x-amz-copy-source-" + name.encode() in headers:
                        checks.append(("x-amz-copy-source-" + name, "x-amz-copy-source-" + name.title(),
                                       sbucket, skey, sversion, none))
        if not checks:
            return upstream, lines, settle, None
        credentials = kms_etags.Credentials(headers.get(b"authorization", b"").decode("latin-1"), SECRET_KEY)
        changes, current = {}, {}
        for header, condition, cbucket, ckey, cversion, none in checks:
            obj = (cbucket, ckey, cversion)
            if obj not in current:
                request = kms_etags.head_request(headers.get(b"host", b"").decode("latin-1"), cbucket, ckey,
                                                 cversion, credentials,
                                                 headers.get(b"x-amz-date", b"").decode("latin-1"))
                upstream, answer = self._send(upstream, b"HEAD", request)
                if answer is None or (answer[0] >= 300 and answer[0] != 404):
                    why = f"KMS emulation: HEAD {cbucket}/{ckey} for {condition}: " + (
                        "no answer" if answer is None else f"server answered {answer[0]}")
                    return upstream, lines, None, (502, _message(502, "Bad Gateway", why.encode()))
                real = header_map(answer[1]).get(b"etag", b"").decode("latin-1").strip().strip('"')
                current[obj] = None if answer[0] == 404 else real
            real = current[obj]
            if real is None:
                continue  # no such object: the server answers that itself
            if kms_etags.judge(headers[header.encode()].decode("latin-1"), kms_etags.kms_etag(cbucket, ckey, real)):
                # In the server's terms; `*` too, which moto takes for an
                # ETag of its own.
                changes[header] = f'"{real}"'
            elif none:
                # None of the ETags named is current, so the condition holds;
                # the server must not compare them with its own ETag.
                changes[header] = None
            else:
                # S3's answer to an If-Match that does not hold (GetObject,
                # https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html).
                body = b"" if op == "HeadObject" else (kms_etags.PRECONDITION_FAILED % condition).encode()
                return upstream, lines, None, (412, _message(412, "Precondition Failed", body,
                                                             "application/xml"))
        if changes:
            lines = kms_etags.edit_request_head(lines, changes, credentials)
        return upstream, lines, settle, None

    def _reply_json(self, obj):
        data = json.dumps(obj).encode()
        self.connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                % (len(data), data))


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main():
    global UPSTREAM, LATENCY_S, KMS_BUCKETS, TRACE, COPY_LIMIT_SOURCES, COPY_LIMIT, CONTROL_UPSTREAM
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay before forwarding each S3 request (not the control endpoints)")
    parser.add_argument("--kms-bucket", action="append", default=[], metavar="NAME",
                        help="objects of this bucket answer SSE-KMS ETags (repeatable)")
    parser.add_argument("--copy-limit-source", action="append", default=[], metavar="NAME",
                        help="CopyObject from this bucket refuses sources over --copy-limit-bytes, as S3 (repeatable)")
    parser.add_argument("--copy-limit-bytes", type=int, default=COPY_LIMIT,
                        help="CopyObject's largest source (S3: 5 GiB); lower only to test the check")
    parser.add_argument("--control-upstream", metavar="URL",
                        help="requests signed for a service other than s3 go here (loopback only)")
    parser.add_argument("--trace", metavar="FILE",
                        help="write a line per request: ms since start, op, status, wall ms, path?query")
    args = parser.parse_args()
    if args.trace:
        TRACE = open(args.trace, "w", encoding="utf-8")
    if args.latency_ms < 0:
        sys.exit("proxy.py: --latency-ms must be >= 0")
    LATENCY_S = args.latency_ms / 1000
    KMS_BUCKETS = frozenset(args.kms_bucket)
    COPY_LIMIT_SOURCES, COPY_LIMIT = frozenset(args.copy_limit_source), args.copy_limit_bytes
    if (KMS_BUCKETS or COPY_LIMIT_SOURCES) and not SECRET_KEY:
        print("proxy.py: no AWS_SECRET_ACCESS_KEY: requests the emulations sign will carry "
              "wrong signatures (moto checks none; Garage refuses them)", file=sys.stderr, flush=True)
    up = urllib.parse.urlsplit(args.upstream)
    if up.hostname not in ("127.0.0.1", "localhost") or up.scheme != "http":
        sys.exit(f"proxy.py: refusing non-loopback upstream {args.upstream}")
    UPSTREAM = ("127.0.0.1", up.port or 80)
    if args.control_upstream:
        control = urllib.parse.urlsplit(args.control_upstream)
        if control.hostname not in ("127.0.0.1", "localhost") or control.scheme != "http":
            sys.exit(f"proxy.py: refusing non-loopback control upstream {args.control_upstream}")
        CONTROL_UPSTREAM = ("127.0.0.1", control.port or 80)
    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            print(port, file=f)
        os.replace(args.port_file + ".tmp", args.port_file)
    kms = f", SSE-KMS ETags in {', '.join(sorted(KMS_BUCKETS))}" if KMS_BUCKETS else ""
    if COPY_LIMIT_SOURCES:
        kms += f", CopyObject up to {COPY_LIMIT} bytes from {', '.join(sorted(COPY_LIMIT_SOURCES))}"
    print(f"proxy.py: 127.0.0.1:{port} -> {args.upstream}, +{args.latency_ms:g} ms per request{kms}",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
