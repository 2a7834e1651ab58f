#!/usr/bin/env python3
"""Synthetic S3 listing server for scripts/bench-memory-scaling.sh.

    synthetic_s3.py [--port 0] [--port-file F]

Listens on 127.0.0.1 and answers ListObjectsV2 for buckets whose content is
a function of their name, so a listing of a million objects costs no memory
and no seeding:

    syn-N-flat        N keys  obj-000000000 … obj-{N-1}
    syn-N-dirs        N keys  dir-00/obj-000000000 … spread over 100 prefixes
    syn-N-uuid        N keys  random-looking UUIDs, spread evenly over their
                      key space (key i is the i-th of N evenly spaced
                      numbers, plus a hash of i below the spacing)
    syn-N-skewed      N keys  100 top-level prefixes p-000/ … p-099/, one of
                      which (p-050/) holds 90% of the keys under 365 date
                      folders, the others 10% between them: the backup
                      bucket whose one hot prefix outgrew the rest
    syn-N-LAYOUT-mod  the same keys; every 100th object (index 0, 100, …) has
                      another size and ETag, so a diff against the plain
                      bucket plans ceil(N/100) updates
    …-twin            any of the above under a second name, with the same
                      content: a bucket pair already in sync

Object i's key sorts at position i (fixed-width numbers, dir-DD assigned in
contiguous blocks), so a page is found by binary search over indices and
made by arithmetic: start-after, continuation tokens, prefix and delimiter
work for any value, and nothing is ever materialised.

Also answered: HeadBucket and GetBucketLocation (for clients that check a
bucket first). Anything else gets an S3 XML error (501 NotImplemented, or
404 NoSuchBucket for a name outside the grammar) and a line on stderr, so a
request the benchmark did not expect is visible rather than silently served.
Read-only: s3-fanout must be run with --dry-run against it.

Control endpoint (bucket names cannot contain "_"):
    GET /__synthetic/counts   {"ops": {op: n}, "errors": n, "keys": {bucket: n}}:
                              requests by operation, and the keys each
                              bucket's listings returned (a key listed twice
                              counts twice)
    GET /__synthetic/keys?bucket=B[&from=K][&before=K]
                              {"keys": n}: how many keys of B are at or after
                              `from` and before `before` (either may be left
                              out), so a test can weigh shards without
                              listing them
"""

import argparse
import base64
import binascii
import hashlib
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import urllib.parse
from xml.sax.saxutils import escape

MAX_KEYS = 1000
DIRS = 100
MOD_EVERY = 100
# One fixed time for every object: the diff compares sizes and ETags, and a
# time equal on both sides never makes a copy look older than its source.
LAST_MODIFIED = "2024-01-01T00:00:00.000Z"
BUCKET_RE = re.compile(r"^syn-([1-9][0-9]{0,9}|0)-(flat|dirs|uuid|skewed)(-mod)?(-twin)?$")
UUID_SPACE = 1 << 128
HOT = 50  # the skewed layout's hot prefix, p-050/


class Bucket:
    """The synthetic content of one bucket name: keys, sizes and ETags as
    functions of an object's index."""

    def __init__(self, count, layout, modified):
        self.count = count
        self.layout = layout
        self.modified = modified

    @classmethod
    def parse(cls, name):
        match = BUCKET_RE.match(name)
        if not match:
            return None
        return cls(int(match.group(1)), match.group(2), bool(match.group(3)))

    def key(self, i):
        if self.layout == "flat":
            return f"obj-{i:09d}"
        if self.layout == "uuid":
            step = UUID_SPACE // max(self.count, 1)
            jitter = int.from_bytes(hashlib.md5(str(i).encode()).digest(), "big") % step
            h = f"{i * step + jitter:032x}"
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        if self.layout == "skewed":
            # 5% before the hot prefix, 90% in it, 5% after; each part in
            # contiguous blocks, so key order stays index order.
            cold, hot_end = self.count // 20, self.count - self.count // 20
            if i < cold:
                return f"p-{i * HOT // cold:03d}/obj-{i:09d}"
            if i < hot_end:
                day = (i - cold) * 365 // (hot_end - cold)
                return f"p-{HOT:03d}/{day:03d}/obj-{i:09d}"
            rest = self.count - hot_end
            return f"p-{HOT + 1 + (i - hot_end) * (99 - HOT) // rest:03d}/obj-{i:09d}"
        # Contiguous blocks keep key order equal to index order.
        return f"dir-{i * DIRS // self.count:02d}/obj-{i:09d}"

    def differs(self, i):
        return self.modified and i % MOD_EVERY == 0

    def size(self, i):
        return 1024 + i % 4096 + (1 if self.differs(i) else 0)

    def etag(self, i, key):
        seed = key + ("#mod" if self.differs(i) else "")
        return hashlib.md5(seed.encode()).hexdigest()

    def first_index(self, predicate, lo=0):
        """The first index in [lo, count) whose key satisfies a predicate
        that is false, then true, over ascending keys; count if none."""
        hi = self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if predicate(self.key(mid)):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def prefix_span(self, prefix):
        """Indices [lo, hi) of the keys starting with `prefix`: a contiguous
        run, since keys sharing a prefix are adjacent in sorted order."""
        lo = self.first_index(lambda k: k >= prefix)
        hi = self.first_index(lambda k: not k.startswith(prefix), lo)
        return lo, hi

    def list_page(self, prefix, delimiter, after, skip_prefix, max_keys):
        """One ListObjectsV2 page: (objects as (index, key), common prefixes,
        truncated, resume marker). Keys are strictly after `after`; with
        `skip_prefix`, also past every key under it (a rolled-up common
        prefix that ended the previous page). Python compares strings by
        code point, which is UTF-8 byte order: S3's order."""
        lo, hi = self.prefix_span(prefix)
        if after is not None:
            lo = self.first_index(lambda k: k > after, lo)
        if skip_prefix is not None:
            lo = self.first_index(lambda k: k > skip_prefix and not k.startswith(skip_prefix), lo)
        objects, prefixes = [], []
        i, marker = lo, None
        while i < hi and len(objects) + len(prefixes) < max_keys:
            key = self.key(i)
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                prefixes.append(common)
                marker = ("p", common)
                i = self.first_index(lambda k: not k.startswith(common), i)
            else:
                objects.append((i, key))
                marker = ("k", key)
                i += 1
        return objects, prefixes, i < hi, marker


def encode_token(marker):
    kind, value = marker
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_token(token):
    try:
        kind, value = base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (kind, value) if kind in ("k", "p") else None


SAFE_KEY = re.compile(r"[A-Za-z0-9_.~/-]*")


def s3_quote(value):
    """encoding-type=url as S3 does it: percent encoding, '/' kept. The
    synthetic keys need none, and skipping quote() halves a page's cost."""
    if SAFE_KEY.fullmatch(value):
        return value
    return urllib.parse.quote(value, safe="/")


def error_xml(code, message, resource):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>synthetic</RequestId></Error>"
    ).encode()


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.errors = 0
        self.keys = {}

    def record(self, op, failed):
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1
            self.errors += failed

    def listed(self, bucket, keys):
        with self.lock:
            self.keys[bucket] = self.keys.get(bucket, 0) + keys

    def snapshot(self):
        with self.lock:
            return {"ops": dict(self.ops), "errors": self.errors, "keys": dict(self.keys)}


COUNTS = Counts()

# Query parameters of ListObjectsV2 that change nothing here, or that the
# AWS SDK adds for its own bookkeeping.
IGNORED_LIST_PARAMS = {"fetch-owner", "x-id", "optional-object-attributes"}
LIST_PARAMS = {"list-type", "prefix", "delimiter", "max-keys", "start-after",
               "continuation-token", "encoding-type"} | IGNORED_LIST_PARAMS


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "synthetic-s3"
    # Headers and body go out in two writes; with Nagle's algorithm the
    # second waits for the client's delayed ACK, 40 ms a response.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per page would be a million lines; errors are logged

    def send(self, status, body, op, content_type="application/xml", headers=()):
        COUNTS.record(op, status >= 400)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-request-id", "synthetic")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def fail(self, status, code, message, op="Unsupported"):
        sys.stderr.write(f"synthetic_s3: {status} {code}: {self.command} {self.path}: {message}\n")
        self.send(status, error_xml(code, message, self.path), op)

    def drain_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def route(self):
        self.drain_body()
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        path = urllib.parse.unquote(url.path)
        if path == "/__synthetic/counts" and self.command == "GET":
            body = json.dumps(COUNTS.snapshot()).encode()
            return self.send(200, body, "Control", "application/json")
        if path == "/__synthetic/keys" and self.command == "GET":
            bucket = Bucket.parse(query.get("bucket", [""])[0])
            if bucket is None:
                return self.fail(404, "NoSuchBucket", "no synthetic bucket by that name")
            lo, hi = 0, bucket.count
            if "from" in query:
                lo = bucket.first_index(lambda k: k >= query["from"][0])
            if "before" in query:
                hi = bucket.first_index(lambda k: k >= query["before"][0])
            body = json.dumps({"keys": max(hi - lo, 0)}).encode()
            return self.send(200, body, "Control", "application/json")
        name, _, key = path.lstrip("/").partition("/")
        if not name:
            return self.fail(501, "NotImplemented", "service-level requests are not synthesised")
        bucket = Bucket.parse(name)
        if bucket is None:
            return self.fail(404, "NoSuchBucket", f"no synthetic bucket {name!r}; "
                             "names are syn-N-flat, syn-N-dirs, optionally with -mod")
        if key:
            return self.fail(501, "NotImplemented", "object-level requests are not synthesised "
                             "(run s3-fanout with --dry-run)")
        if self.command == "HEAD" and not query:
            return self.send(200, b"", "HeadBucket", headers=[("x-amz-bucket-region", "us-east-1")])
        if self.command == "GET" and "location" in query:
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                    '<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>').encode()
            return self.send(200, body, "GetBucketLocation")
        if self.command == "GET" and query.get("list-type") == ["2"]:
            return self.list_objects_v2(name, bucket, query)
        return self.fail(501, "NotImplemented", "only ListObjectsV2, HeadBucket and "
                         "GetBucketLocation are synthesised")

    def list_objects_v2(self, name, bucket, query):
        unknown = sorted(set(query) - LIST_PARAMS)
        if unknown:
            return self.fail(501, "NotImplemented", f"unsupported list parameters {unknown}",
                             "ListObjectsV2")
        arg = lambda k: query.get(k, [""])[0]  # noqa: E731
        prefix, delimiter, start_after = arg("prefix"), arg("delimiter"), arg("start-after")
        encoding = arg("encoding-type")
        if encoding not in ("", "url"):
            return self.fail(400, "InvalidArgument", f"invalid encoding type {encoding!r}",
                             "ListObjectsV2")
        try:
            max_keys = int(arg("max-keys") or MAX_KEYS)
        except ValueError:
            max_keys = -1
        if max_keys < 0:
            return self.fail(400, "InvalidArgument", "max-keys must be a non-negative integer",
                             "ListObjectsV2")
        max_keys = min(max_keys, MAX_KEYS)
        token = arg("continuation-token") if "continuation-token" in query else None
        after, skip_prefix = start_after or None, None
        if token is not None:
            marker = decode_token(token)
            if marker is None:
                return self.fail(400, "InvalidArgument", "the continuation token is not valid",
                                 "ListObjectsV2")
            # The token supersedes start-after, as on S3 (it is always later).
            kind, value = marker
            after, skip_prefix = (value, None) if kind == "k" else (None, value)

        objects, prefixes, truncated, marker = bucket.list_page(
            prefix, delimiter, after, skip_prefix, max_keys)
        COUNTS.listed(name, len(objects))
        if max_keys == 0:
            truncated = False
        enc = s3_quote if encoding == "url" else (lambda v: v)
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n'
               '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
               f"<Name>{escape(name)}</Name><Prefix>{escape(enc(prefix))}</Prefix>"]
        if start_after:
            out.append(f"<StartAfter>{escape(enc(start_after))}</StartAfter>")
        if token is not None:
            out.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if delimiter:
            out.append(f"<Delimiter>{escape(enc(delimiter))}</Delimiter>")
        out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if encoding:
            out.append(f"<EncodingType>{encoding}</EncodingType>")
        out.append(f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if truncated:
            out.append(f"<NextContinuationToken>{encode_token(marker)}</NextContinuationToken>")
        for i, key in objects:
            out.append(
                f"<Contents><Key>{escape(enc(key))}</Key>"
                f"<LastModified>{LAST_MODIFIED}</LastModified>"
                f"<ETag>&quot;{bucket.etag(i, key)}&quot;</ETag>"
                f"<Size>{bucket.size(i)}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        for common in prefixes:
            out.append(f"<CommonPrefixes><Prefix>{escape(enc(common))}</Prefix></CommonPrefixes>")
        out.append("</ListBucketResult>")
        self.send(200, "".join(out).encode(), "ListObjectsV2")

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = route


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    # The SDK opens a connection per concurrent request; the default backlog
    # of 5 drops bursts from 8 parallel listers on two sides.
    request_queue_size = 128


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="0: let the kernel choose")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        # Written whole, then renamed: a reader never sees a partial number.
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{port}\n")
        os.replace(args.port_file + ".tmp", args.port_file)
    sys.stderr.write(f"synthetic_s3: listening on http://127.0.0.1:{port}\n")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
