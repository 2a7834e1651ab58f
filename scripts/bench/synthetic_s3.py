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
    syn-N-LAYOUT-big  the same keys; every 100,000th object (index 99,999,
                      199,999, …) is 6 GiB, past CopyObject's 5 GiB limit,
                      so copying it takes the multipart calls
    syn-N-LAYOUT[-big][-mod]-versions
                      a versioned bucket (versioning Enabled) of the same N
                      keys, each with a history of versions and delete
                      markers (below), whose current objects are the plain
                      bucket's: ListObjectVersions, ListObjectsV2 (the keys
                      whose newest entry is a version), HeadObject and
                      GetObjectTagging with or without a versionId (a
                      delete marker's id is 405, as on S3). It copies as
                      its current objects; a copy of a version
                      (x-amz-copy-source ?versionId=) is not synthesised,
                      nor is a -versions-copy bucket
    …-twin            any of the above under a second name, with the same
                      content: a bucket pair already in sync
    …-copy            an empty bucket that holds what is copied into it
                      (CopyObject, or a completed multipart upload of
                      UploadPartCopy parts) from a bucket of the same N and
                      LAYOUT: a first full copy, and then a re-run of it.
                      A copied object is one byte of state (the variant it
                      was copied from); bytes are never stored.

A -versions bucket's history is a function of the index too (M64 is
2**64, `mix` is SplitMix64's finaliser, the same in any language):

    mix(x):  x = (x + 0x9E3779B97F4A7C15) % M64
             x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % M64
             x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % M64
             return x ^ (x >> 31)
    h = mix(i), g = mix(h)
    entries   key i has c = 1 + h % 4 entries, j = 0 (oldest) … c-1
              (newest), listed newest first as S3 does. Entry 0 is a
              version; entry j >= 1 is a delete marker when
              (h >> (4 + 4j)) % 16 < 5, else a version. So N keys have
              sum(c) entries, about 2.5 N (versions_total(N) counts them).
    time      entry j was written at VERSIONS_EPOCH + j * 86400
              + (g >> 16j) % 65536 seconds (VERSIONS_EPOCH is
              2026-01-01T00:00:00Z): generation j on day j, whole seconds,
              strictly newer with j.
    id        "null" for entry 0 when (h >> 24) % 8 == 0 (written before
              versioning was enabled), else "v{j}.{h:016x}".
    content   the newest version (not delete marker) of key i is the plain
              bucket's object i (its size and ETag, -big/-mod included);
              an older version j has size 512 + j and the ETag
              f"{mix(g + j):016x}{h:016x}" (32 hex digits, as an MD5's).

So key i is present as of a time T (seconds) iff some entry has a time at
or before T and the newest such entry is a version; it is then that
version (as_of(i, T) gives it). Before day 0 nothing is present; from day
3 plus 65536 s on (2026-01-04T18:12:16Z) every key is what it is now:
present unless its newest entry is a delete marker. versions_as_of(N, T)
counts the keys present at T and those of them at an older version than
now, for a benchmark's expected figures.

ListObjectVersions pages as S3 does (API_ListObjectVersions.html and
"Listing objects in a versioning-enabled bucket" in the S3 user guide):
keys ascending, each key's versions and delete markers interleaved newest
first; MaxKeys (at most 1000) counts both; a KeyMarker alone starts at the
newest entry of the first key after it; KeyMarker with VersionIdMarker
resumes after that entry (400 if it names none of that key's, or comes
without a KeyMarker); a truncated page's NextKeyMarker and
NextVersionIdMarker are its last entry; encoding-type=url encodes Key,
Prefix, KeyMarker and NextKeyMarker.

Object i's key sorts at position i (fixed-width numbers, dir-DD assigned in
contiguous blocks), so a page is found by binary search over indices and
made by arithmetic: start-after, continuation tokens, prefix and delimiter
work for any value, and nothing is ever materialised.

Also answered: HeadBucket, GetBucketLocation and GetBucketVersioning (for
clients that check a bucket first; Enabled for -versions buckets, and no
Status at all for the others, as S3 answers for a bucket whose versioning
was never set); HeadObject (with If-Match, partNumber and versionId),
GetObjectTagging (no tags; versionId too) and ListMultipartUploads on any
bucket; ListObjectVersions (prefix, key-marker, version-id-marker,
max-keys, encoding-type; no delimiter) on any bucket: a plain bucket's
objects are each one "null" version; CopyObject (with
x-amz-copy-source-if-match), CreateMultipartUpload, UploadPartCopy,
CompleteMultipartUpload and AbortMultipartUpload into a -copy bucket. A
multipart copy gets S3's composite ETag (the MD5 of its parts' MD5s, "-N"),
its parts' ETags being MD5s of the source range they copied. Anything else
gets an S3 XML error (501 NotImplemented, or 404 NoSuchBucket for a name
outside the grammar) and a line on stderr, so a request the benchmark did
not expect is visible rather than silently served. Only -copy buckets take
writes; run s3-fanout with --dry-run against the others.

Control endpoint (bucket names cannot contain "_"):
    GET /__synthetic/counts   {"ops": {op: n}, "errors": n, "keys": {bucket: n},
                               "sampled": {bucket: n}, "versions": {bucket: n},
                               "written": {bucket: n}}:
                              requests by operation; the keys each bucket's
                              listings without a delimiter returned (a key
                              listed twice counts twice), and those with one
                              (a planner's look at a prefix); the versions
                              and delete markers ListObjectVersions returned;
                              the objects each -copy bucket holds
    GET /__synthetic/keys?bucket=B[&from=K][&before=K]
                              {"keys": n}: how many keys of B are at or after
                              `from` and before `before` (either may be left
                              out), so a test can weigh shards without
                              listing them (of a -versions bucket:
                              the keys ever written, deleted ones included)
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
import time
import urllib.parse
from xml.sax.saxutils import escape

MAX_KEYS = 1000
DIRS = 100
MOD_EVERY = 100
# One fixed time for every object: the diff compares sizes and ETags, and a
# time equal on both sides never makes a copy look older than its source.
LAST_MODIFIED = "2024-01-01T00:00:00.000Z"
LAST_MODIFIED_SECONDS = 1_704_067_200
HTTP_LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
BUCKET_RE = re.compile(
    r"^syn-([1-9][0-9]{0,9}|0)-(flat|dirs|uuid|skewed)(-big)?(-mod)?(-versions)?(-twin|-copy)?$")
M64 = (1 << 64) - 1
VERSIONS_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
BIG_EVERY = 100_000
BIG_SIZE = 6 << 30  # past CopyObject's 5 GiB: a copy takes the multipart calls
UUID_SPACE = 1 << 128
HOT = 50  # the skewed layout's hot prefix, p-050/


class Bucket:
    """The synthetic content of one bucket name: keys, sizes and ETags as
    functions of an object's index. A -copy bucket's objects are those
    copied into it (`written`), each the content of the variant it was
    copied from."""

    def __init__(self, count, layout, big=False, modified=False, copy=False, versions=False):
        self.count = count
        self.layout = layout
        self.big = big
        self.modified = modified
        self.copy = copy
        self.versions = versions
        self.name = None

    @classmethod
    def parse(cls, name):
        match = BUCKET_RE.match(name)
        if not match:
            return None
        count, layout, big, modified, versions, twin = match.groups()
        if versions and twin == "-copy":
            return None  # copies keep one byte an object, not a history
        bucket = cls(int(count), layout, bool(big), bool(modified), twin == "-copy",
                     bool(versions))
        bucket.name = name
        return bucket

    def variant(self):
        """The one byte a copy of this content is stored as (0 is absent)."""
        return 1 | self.big << 1 | self.modified << 2

    @classmethod
    def of_variant(cls, count, layout, byte):
        return cls(count, layout, bool(byte & 2), bool(byte & 4))

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

    def index_of(self, key):
        """The index whose key is `key`, or None: keys ascend with index."""
        i = self.first_index(lambda k: k >= key)
        return i if i < self.count and self.key(i) == key else None

    def differs(self, i):
        return self.modified and i % MOD_EVERY == 0

    def size(self, i):
        if self.big and i % BIG_EVERY == BIG_EVERY - 1:
            return BIG_SIZE + i
        return 1024 + i % 4096 + (1 if self.differs(i) else 0)

    def etag(self, i, key):
        seed = key + ("#mod" if self.differs(i) else "") + ("#big" if self.big else "")
        return hashlib.md5(seed.encode()).hexdigest()

    def object(self, i, key):
        """(size, ETag, part sizes or None) of object i, or None if absent."""
        if self.versions:
            history = History(i)
            if history.marker(history.count - 1):
                return None  # deleted: its newest entry is a delete marker
            return self.size(i), self.etag(i, key), None
        if not self.copy:
            return self.size(i), self.etag(i, key), None
        return STORE.object(self, i, key)

    def next_index(self, i, hi):
        """The first index in [i, hi) that holds an object; hi if none."""
        if self.versions:
            # Deleted keys come in short runs (23% of keys, at random).
            while i < hi and History(i).deleted():
                i += 1
            return i
        if not self.copy:
            return i
        return STORE.next_present(self, i, hi)

    def version(self, i, key, j, history=None):
        """Entry j of key i: (version id, delete marker, seconds, size,
        ETag); a delete marker has size 0 and no ETag."""
        history = history or History(i)
        vid, seconds = history.version_id(j), history.seconds(j)
        if history.marker(j):
            return vid, True, seconds, 0, None
        if j == history.newest_version():
            return vid, False, seconds, self.size(i), self.etag(i, key)
        return vid, False, seconds, 512 + j, f"{mix(history.g + j):016x}{history.h:016x}"

    def history_of(self, i):
        """Key i's history; a plain bucket's object is one "null" version
        (written before versioning, at the fixed LAST_MODIFIED)."""
        return History(i) if self.versions else PlainHistory()

    def list_versions(self, prefix, key_marker, version_marker, max_keys):
        """One ListObjectVersions page: ([(index, entry j, history)], truncated).

        https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectVersions.html
        and "Listing objects in a versioning-enabled bucket"
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/list-obj-version-enabled-bucket.html):
        keys ascend, each key's versions and delete markers together newest
        first; a KeyMarker alone starts at the first (newest) entry of the
        next key after it; KeyMarker and VersionIdMarker resume after that
        version of that key; MaxKeys counts versions and delete markers.
        Raises ValueError for a VersionIdMarker that names no version of
        KeyMarker's key (S3: 400 InvalidArgument)."""
        lo, hi = self.prefix_span(prefix)
        i, r = lo, 0  # key index, and entry position within it, newest first
        if key_marker is not None and version_marker is not None:
            at = self.index_of(key_marker)
            history = self.history_of(at) if at is not None else None
            j = history.entry_of(version_marker) if history else None
            if j is None:
                raise ValueError(f"no version {version_marker!r} of {key_marker!r}")
            # Entry j is at position count-1-j: resume at the next one.
            if (at, history.count - j) > (lo, 0):
                i, r = at, history.count - j
        elif key_marker is not None:
            i = self.first_index(lambda k: k > key_marker, lo)
        # A -copy bucket lists what it holds; every other key has a history.
        present = (lambda i: STORE.next_present(self, i, hi)) if self.copy else (lambda i: i)
        if r == 0:
            i = present(i)
        out = []
        history = self.history_of(i) if i < hi else None
        while i < hi and len(out) < max_keys:
            if r >= history.count:
                i, r = present(i + 1), 0
                history = self.history_of(i) if i < hi else None
                continue
            out.append((i, history.count - 1 - r, history))
            r += 1
        if i < hi and r >= history.count:
            i = present(i + 1)
        return out, i < hi


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
        i = self.next_index(i, hi)
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
            i = self.next_index(i, hi)
        return objects, prefixes, i < hi, marker


def mix(x):
    """SplitMix64's finaliser: a -versions key's history is a function of
    mix(index) (see the module's docstring)."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


class History:
    """The versions and delete markers of key i of a -versions bucket,
    entry 0 the oldest (the module's docstring says how)."""

    __slots__ = ("h", "g", "count")

    def __init__(self, i):
        self.h = mix(i)
        self.g = mix(self.h)
        self.count = 1 + self.h % 4

    def marker(self, j):
        return j >= 1 and (self.h >> (4 + 4 * j)) % 16 < 5

    def deleted(self):
        return self.marker(self.count - 1)

    def newest_version(self):
        j = self.count - 1
        while self.marker(j):
            j -= 1
        return j

    def seconds(self, j):
        return VERSIONS_EPOCH + j * DAY + (self.g >> (16 * j)) % 65536

    def version_id(self, j):
        if j == 0 and (self.h >> 24) % 8 == 0:
            return "null"
        return f"v{j}.{self.h:016x}"

    def entry_of(self, version_id):
        """The entry whose id this is, or None."""
        for j in range(self.count):
            if self.version_id(j) == version_id:
                return j
        return None

    def as_of(self, seconds):
        """The entry current at `seconds`: its j, or None if the key was
        absent then (nothing written yet, or a delete marker)."""
        for j in range(self.count - 1, -1, -1):
            if self.seconds(j) <= seconds:
                return None if self.marker(j) else j
        return None


class PlainHistory:
    """A plain bucket's object as ListObjectVersions shows it: one version
    "null", as S3 shows an object written while versioning was never on."""

    count = 1

    def marker(self, j):
        return False

    def seconds(self, j):
        return LAST_MODIFIED_SECONDS

    def version_id(self, j):
        return "null"

    def entry_of(self, version_id):
        return 0 if version_id == "null" else None

    def newest_version(self):
        return 0


def iso_time(seconds):
    """A LastModified of a listing: S3 has whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def versions_total(count):
    """Versions and delete markers of a -versions bucket of `count` keys."""
    return sum(1 + mix(i) % 4 for i in range(count))


def versions_as_of(count, seconds):
    """(keys present as of `seconds`, those of them at an older version than
    their newest): a sync as of that time against the plain bucket lists the
    first and plans the second as updates."""
    present = older = 0
    for i in range(count):
        history = History(i)
        j = history.as_of(seconds)
        if j is not None:
            present += 1
            older += j != history.newest_version()
    return present, older


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
        self.sampled = {}
        self.versions = {}

    def record(self, op, failed):
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1
            self.errors += failed

    def listed(self, bucket, keys, delimited):
        with self.lock:
            into = self.sampled if delimited else self.keys
            into[bucket] = into.get(bucket, 0) + keys

    def snapshot(self):
        with self.lock:
            return {"ops": dict(self.ops), "errors": self.errors, "keys": dict(self.keys),
                    "sampled": dict(self.sampled), "versions": dict(self.versions),
                    "written": STORE.written()}


COUNTS = Counts()

COMPOSED = 255  # a -copy object made by a multipart upload: its parts are kept
MIN_PART = 5 << 20
MAX_COPY = 5 << 30


class Store:
    """What the -copy buckets hold: a byte per index (0 absent, COMPOSED, or
    the variant of the content copied), the composite objects' ETags and
    part sizes, and the multipart uploads in progress."""

    def __init__(self):
        self.lock = threading.Lock()
        self.variants = {}  # bucket name -> bytearray(count)
        self.present = {}  # bucket name -> bytearray(count) of 0/1: find() is C-fast
        self.objects = {}  # bucket name -> objects present
        self.composed = {}  # (bucket name, index) -> (size, ETag, [part sizes])
        self.uploads = {}  # upload id -> {"bucket", "key", "index", "parts": {n: (size, etag)}}
        self.next_upload = 0

    def _arrays(self, bucket):
        if bucket.name not in self.variants:
            self.variants[bucket.name] = bytearray(bucket.count)
            self.present[bucket.name] = bytearray(bucket.count)
            self.objects[bucket.name] = 0
        return self.variants[bucket.name], self.present[bucket.name]

    def state(self, bucket, i):
        """What a copy of object i of `bucket` stores: (variant, composed)."""
        if not bucket.copy:
            return bucket.variant(), None
        with self.lock:
            variants, _ = self._arrays(bucket)
            byte = variants[i]
            return byte, self.composed.get((bucket.name, i))

    def object(self, bucket, i, key):
        byte, composed = self.state(bucket, i)
        if byte == 0:
            return None
        if byte == COMPOSED:
            return composed
        content = Bucket.of_variant(bucket.count, bucket.layout, byte)
        return content.size(i), content.etag(i, key), None

    def next_present(self, bucket, i, hi):
        with self.lock:
            _, present = self._arrays(bucket)
            found = present.find(1, i, hi)
        return hi if found < 0 else found

    def put(self, bucket, i, byte, composed=None):
        with self.lock:
            variants, present = self._arrays(bucket)
            self.objects[bucket.name] += 1 - present[i]
            variants[i], present[i] = byte, 1
            if composed is None:
                self.composed.pop((bucket.name, i), None)
            else:
                self.composed[(bucket.name, i)] = composed

    def create_upload(self, bucket, key, i):
        with self.lock:
            self.next_upload += 1
            upload_id = f"syn-upload-{self.next_upload}"
            self.uploads[upload_id] = {"bucket": bucket.name, "key": key, "index": i, "parts": {}}
            return upload_id

    def upload(self, upload_id, bucket, key):
        with self.lock:
            upload = self.uploads.get(upload_id)
        if upload is None or upload["bucket"] != bucket.name or upload["key"] != key:
            return None
        return upload

    def end_upload(self, upload_id):
        with self.lock:
            return self.uploads.pop(upload_id, None) is not None

    def open_uploads(self, bucket_name, prefix):
        with self.lock:
            return sorted((u["key"], upload_id) for upload_id, u in self.uploads.items()
                          if u["bucket"] == bucket_name and u["key"].startswith(prefix))

    def written(self):
        with self.lock:
            return dict(self.objects)


STORE = Store()

# Query parameters of ListObjectsV2 that change nothing here, or that the
# AWS SDK adds for its own bookkeeping.
IGNORED_LIST_PARAMS = {"fetch-owner", "x-id", "optional-object-attributes"}
LIST_PARAMS = {"list-type", "prefix", "delimiter", "max-keys", "start-after",
               "continuation-token", "encoding-type"} | IGNORED_LIST_PARAMS
VERSION_LIST_PARAMS = {"versions", "prefix", "key-marker", "version-id-marker", "max-keys",
                       "encoding-type"} | IGNORED_LIST_PARAMS


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "synthetic-s3"
    # Headers and body go out in two writes; with Nagle's algorithm the
    # second waits for the client's delayed ACK, 40 ms a response.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per page would be a million lines; errors are logged

    def send(self, status, body, op, content_type="application/xml", headers=(), length=None):
        COUNTS.record(op, status >= 400)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("x-amz-request-id", "synthetic")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def fail(self, status, code, message, op="Unsupported"):
        sys.stderr.write(f"synthetic_s3: {status} {code}: {self.command} {self.path}: {message}\n")
        self.send(status, error_xml(code, message, self.path), op)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def route(self):
        body = self.read_body()
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
                             "names are syn-N-LAYOUT[-big][-mod][-versions][-twin|-copy]")
        if key:
            return self.object_request(bucket, key, query, body)
        if self.command == "GET" and "uploads" in query:
            return self.list_uploads(name, query)
        if self.command == "HEAD" and not query:
            return self.send(200, b"", "HeadBucket", headers=[("x-amz-bucket-region", "us-east-1")])
        if self.command == "GET" and "location" in query:
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                    '<LocationConstraint xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>').encode()
            return self.send(200, body, "GetBucketLocation")
        if self.command == "GET" and "versioning" in query:
            # https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html:
            # a bucket whose versioning was never set answers no Status.
            status = "<Status>Enabled</Status>" if bucket.versions else ""
            body = ('<?xml version="1.0" encoding="UTF-8"?>\n<VersioningConfiguration '
                    f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{status}'
                    "</VersioningConfiguration>").encode()
            return self.send(200, body, "GetBucketVersioning")
        if self.command == "GET" and "versions" in query:
            return self.list_object_versions(name, bucket, query)
        if self.command == "GET" and query.get("list-type") == ["2"]:
            return self.list_objects_v2(name, bucket, query)
        return self.fail(501, "NotImplemented", "only ListObjectsV2, ListObjectVersions, "
                         "HeadBucket, GetBucketLocation and GetBucketVersioning are synthesised")

    def list_object_versions(self, name, bucket, query):
        op = "ListObjectVersions"
        unknown = sorted(set(query) - VERSION_LIST_PARAMS)
        if unknown:
            return self.fail(501, "NotImplemented", f"unsupported list parameters {unknown}", op)
        arg = lambda k: query.get(k, [""])[0]  # noqa: E731
        prefix, encoding = arg("prefix"), arg("encoding-type")
        key_marker = arg("key-marker") or None
        version_marker = arg("version-id-marker") or None
        if encoding not in ("", "url"):
            return self.fail(400, "InvalidArgument", f"invalid encoding type {encoding!r}", op)
        if version_marker is not None and key_marker is None:
            return self.fail(400, "InvalidArgument", "A version-id marker cannot be "
                             "specified without a key marker.", op)
        try:
            max_keys = int(arg("max-keys") or MAX_KEYS)
        except ValueError:
            max_keys = -1
        if max_keys < 0:
            return self.fail(400, "InvalidArgument", "max-keys must be a non-negative integer", op)
        max_keys = min(max_keys, MAX_KEYS)
        try:
            entries, truncated = bucket.list_versions(prefix, key_marker, version_marker,
                                                      max_keys)
        except ValueError as e:
            return self.fail(400, "InvalidArgument", f"Invalid version id specified: {e}", op)
        with COUNTS.lock:
            COUNTS.versions[name] = COUNTS.versions.get(name, 0) + len(entries)
        truncated = truncated and max_keys > 0
        enc = s3_quote if encoding == "url" else (lambda v: v)
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n'
               '<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
               f"<Name>{escape(name)}</Name><Prefix>{escape(enc(prefix))}</Prefix>",
               f"<KeyMarker>{escape(enc(key_marker or ''))}</KeyMarker>",
               f"<VersionIdMarker>{escape(version_marker or '')}</VersionIdMarker>"]
        rows, last, key, owner = [], None, None, "<Owner><ID>synthetic</ID></Owner>"
        for i, j, history in entries:
            if i != last:
                last, key = i, bucket.key(i)
                shown = escape(enc(key))
            if bucket.versions:
                vid, marker, seconds, size, etag = bucket.version(i, key, j, history)
            else:
                found = bucket.object(i, key)
                vid, marker, seconds = "null", False, LAST_MODIFIED_SECONDS
                size, etag = found[0], found[1]
            # S3 has whole seconds: 2026-01-01T00:00:00.000Z.
            stamp = iso_time(seconds)
            latest = "true" if j == history.count - 1 else "false"
            head = (f"<Key>{shown}</Key><VersionId>{vid}</VersionId>"
                    f"<IsLatest>{latest}</IsLatest><LastModified>{stamp}</LastModified>")
            if marker:
                rows.append(f"<DeleteMarker>{head}{owner}</DeleteMarker>")
            else:
                rows.append(f"<Version>{head}<ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size>"
                            f"{owner}<StorageClass>STANDARD</StorageClass></Version>")
        if truncated:
            # The last entry returned, as S3 gives them: the next page
            # resumes after it.
            i, j, history = entries[-1]
            out.append(f"<NextKeyMarker>{escape(enc(bucket.key(i)))}</NextKeyMarker>"
                       f"<NextVersionIdMarker>{history.version_id(j)}</NextVersionIdMarker>")
        out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if encoding:
            out.append(f"<EncodingType>{encoding}</EncodingType>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        out.extend(rows)
        out.append("</ListVersionsResult>")
        self.send(200, "".join(out).encode(), op)

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
        COUNTS.listed(name, len(objects), bool(delimiter))
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
            size, etag, _ = bucket.object(i, key)
            stamp = LAST_MODIFIED
            if bucket.versions:
                history = History(i)
                stamp = iso_time(history.seconds(history.newest_version()))
            out.append(
                f"<Contents><Key>{escape(enc(key))}</Key>"
                f"<LastModified>{stamp}</LastModified>"
                f"<ETag>&quot;{etag}&quot;</ETag>"
                f"<Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        for common in prefixes:
            out.append(f"<CommonPrefixes><Prefix>{escape(enc(common))}</Prefix></CommonPrefixes>")
        out.append("</ListBucketResult>")
        self.send(200, "".join(out).encode(), "ListObjectsV2")

    # Object-level requests. What S3 answers is cited where it decides
    # something: https://docs.aws.amazon.com/AmazonS3/latest/API/API_Operations_Amazon_Simple_Storage_Service.html

    def object_request(self, bucket, key, query, body):
        # x-id names the operation for the AWS SDK's own bookkeeping.
        query = {k: v for k, v in query.items() if k != "x-id"}
        index = bucket.index_of(key)
        command = self.command
        if command == "HEAD" and set(query) <= {"partNumber", "versionId"}:
            return self.head_object(bucket, key, index, query)
        if command == "GET" and set(query) <= {"tagging", "versionId"} and "tagging" in query:
            found = self.lookup(bucket, key, index, query, "GetObjectTagging")
            if found is None:
                return None
            body = '<?xml version="1.0" encoding="UTF-8"?>\n<Tagging><TagSet></TagSet></Tagging>'
            return self.send(200, body.encode(), "GetObjectTagging", headers=found[4])
        if command == "PUT" and "uploadId" in query and "x-amz-copy-source" in self.headers:
            return self.upload_part_copy(bucket, key, query)
        if command == "PUT" and not query and "x-amz-copy-source" in self.headers:
            return self.copy_object(bucket, key, index)
        if command == "POST" and "uploads" in query:
            return self.create_upload(bucket, key, index)
        if command == "POST" and "uploadId" in query:
            return self.complete_upload(bucket, key, query, body)
        if command == "DELETE" and "uploadId" in query:
            if not STORE.end_upload(query["uploadId"][0]):
                return self.fail(404, "NoSuchUpload", "no such upload", "AbortMultipartUpload")
            return self.send(204, b"", "AbortMultipartUpload")
        return self.fail(501, "NotImplemented", "this object-level request is not synthesised")

    def lookup(self, bucket, key, index, query, op):
        """The object a HeadObject or GetObjectTagging names, the current
        one or the version `versionId` says: (size, ETag, parts, HTTP
        Last-Modified, headers), or None once the error is sent (a HEAD's
        has no body). A delete marker named by its id is 405, as on S3
        (https://docs.aws.amazon.com/AmazonS3/latest/userguide/DeleteMarker.html);
        an id that is not "null" is 400 on a bucket never versioned."""
        version_id = query.get("versionId", [None])[0]
        headers = []
        fail = (lambda status, code, message, extra=():  # noqa: E731
                self.send(status, b"", op, headers=list(extra)) if self.command == "HEAD"
                else self.fail(status, code, message, op))
        if version_id is None:
            found = bucket.object(index, key) if index is not None else None
            if found is None:
                fail(404, "NoSuchKey", "no such key")
                return None
            if not bucket.versions:
                return (*found, HTTP_LAST_MODIFIED, headers)
            history = History(index)
            j = history.newest_version()
        else:
            history = bucket.history_of(index) if index is not None else None
            j = history.entry_of(version_id) if history is not None else None
            if j is None and not bucket.versions and version_id != "null":
                fail(400, "InvalidArgument", "Invalid version id specified")
                return None
            found = bucket.object(index, key) if index is not None else None
            if j is None or not bucket.versions and found is None:
                fail(404, "NoSuchVersion", "no such version")
                return None
            if not bucket.versions:
                return (*found, HTTP_LAST_MODIFIED, headers)
        vid, marker, seconds, size, etag = bucket.version(index, key, j, history)
        headers.append(("x-amz-version-id", vid))
        if marker:
            fail(405, "MethodNotAllowed", "the version is a delete marker",
                 [("x-amz-delete-marker", "true"), *headers])
            return None
        stamp = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(seconds))
        return size, etag, None, stamp, headers

    def head_object(self, bucket, key, index, query):
        found = self.lookup(bucket, key, index, query, "HeadObject")
        if found is None:
            return None
        size, etag, parts, last_modified, extra = found
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match.strip('"') != etag:
            return self.send(412, b"", "HeadObject")
        headers = [("ETag", f'"{etag}"'), ("Last-Modified", last_modified),
                   ("Accept-Ranges", "bytes"), *extra]
        part = query.get("partNumber", [None])[0]
        if part is not None:
            # HeadObject partNumber: a part's length and the part count of a
            # multipart object; part 1 of any other object is all of it, and
            # a later part is out of range (416).
            number = int(part)
            if parts is None and number != 1 or parts is not None and number > len(parts):
                return self.send(416, b"", "HeadObject")
            if parts is not None:
                size = parts[number - 1]
                headers.append(("x-amz-mp-parts-count", str(len(parts))))
        return self.send(200, b"", "HeadObject", "binary/octet-stream", headers, length=size)

    def copy_source(self, op):
        """The source object of a copy request: (bucket, index, key, size,
        ETag, parts), or None once an error is sent."""
        value = self.headers["x-amz-copy-source"]
        path, _, version = value.partition("?")
        name, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
        source = Bucket.parse(name)
        if source is None:
            self.fail(404, "NoSuchBucket", f"no synthetic bucket {name!r}", op)
            return None
        index = source.index_of(key)
        found = source.object(index, key) if index is not None else None
        if found is None or version:
            self.fail(404, "NoSuchKey", f"no source object {value!r}", op)
            return None
        size, etag, parts = found
        if_match = self.headers.get("x-amz-copy-source-if-match")
        if if_match is not None and if_match.strip('"') != etag:
            self.fail(412, "PreconditionFailed", "x-amz-copy-source-if-match failed", op)
            return None
        return source, index, key, size, etag, parts

    def writable(self, bucket, key, source, op):
        """A -copy bucket of the same keys as the source takes the write."""
        if not bucket.copy:
            self.fail(501, "NotImplemented", "only -copy buckets take writes", op)
            return False
        if source is not None and (source.count, source.layout) != (bucket.count, bucket.layout):
            self.fail(501, "NotImplemented", "copies between different key sets "
                      "are not synthesised", op)
            return False
        if bucket.index_of(key) is None:
            self.fail(501, "NotImplemented", f"{key!r} is not a key of {bucket.name}", op)
            return False
        return True

    def copy_object(self, bucket, key, index):
        found = self.copy_source("CopyObject")
        if found is None:
            return None
        source, source_index, _, size, etag, _ = found
        if not self.writable(bucket, key, source, "CopyObject"):
            return None
        if size > MAX_COPY:
            # CopyObject copies at most 5 GB in one request:
            # https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html
            return self.fail(400, "InvalidRequest", "The specified copy source is larger than "
                             "the maximum allowable size for a copy source: 5368709120",
                             "CopyObject")
        byte, composed = STORE.state(source, source_index)
        if byte == COMPOSED:
            # A one-request copy of a multipart object is a single-part
            # object: a plain ETag, no parts.
            composed = (size, hashlib.md5(f"copy:{etag}".encode()).hexdigest(), None)
        STORE.put(bucket, index, byte, composed)
        new_etag = etag if composed is None else composed[1]
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<CopyObjectResult>'
                f"<LastModified>{LAST_MODIFIED}</LastModified><ETag>&quot;{new_etag}&quot;</ETag>"
                "</CopyObjectResult>")
        return self.send(200, body.encode(), "CopyObject")

    def create_upload(self, bucket, key, index):
        if not self.writable(bucket, key, None, "CreateMultipartUpload"):
            return None
        upload_id = STORE.create_upload(bucket, key, index)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult>'
                f"<Bucket>{escape(bucket.name)}</Bucket><Key>{escape(key)}</Key>"
                f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>")
        return self.send(200, body.encode(), "CreateMultipartUpload")

    def upload_part_copy(self, bucket, key, query):
        op = "UploadPartCopy"
        upload = STORE.upload(query["uploadId"][0], bucket, key)
        if upload is None:
            return self.fail(404, "NoSuchUpload", "no such upload", op)
        found = self.copy_source(op)
        if found is None:
            return None
        source, _, _, size, etag, _ = found
        if not self.writable(bucket, key, source, op):
            return None
        number = int(query.get("partNumber", ["0"])[0])
        if not 1 <= number <= 10_000:
            return self.fail(400, "InvalidArgument", "part numbers are 1 to 10,000", op)
        first, last = 0, size - 1
        wanted = self.headers.get("x-amz-copy-source-range")
        if wanted is not None:
            match = re.fullmatch(r"bytes=(\d+)-(\d+)", wanted)
            if not match or int(match.group(2)) >= size or int(match.group(1)) > int(match.group(2)):
                return self.fail(400, "InvalidArgument", f"bad copy source range {wanted!r}", op)
            first, last = int(match.group(1)), int(match.group(2))
        if last - first + 1 > MAX_COPY:
            return self.fail(400, "InvalidRequest", "a part is at most 5 GiB", op)
        part_etag = hashlib.md5(f"{etag}:{first}-{last}".encode()).hexdigest()
        with STORE.lock:
            upload["parts"][number] = (last - first + 1, part_etag)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<CopyPartResult>'
                f"<LastModified>{LAST_MODIFIED}</LastModified><ETag>&quot;{part_etag}&quot;</ETag>"
                "</CopyPartResult>")
        return self.send(200, body.encode(), op)

    def complete_upload(self, bucket, key, query, body):
        op = "CompleteMultipartUpload"
        upload_id = query["uploadId"][0]
        upload = STORE.upload(upload_id, bucket, key)
        if upload is None:
            return self.fail(404, "NoSuchUpload", "no such upload", op)
        text = body.decode()
        listed = []
        for part in re.findall(r"<Part>(.*?)</Part>", text, re.S):
            number = re.search(r"<PartNumber>(\d+)</PartNumber>", part)
            etag = re.search(r"<ETag>(.*?)</ETag>", part, re.S)
            if not number or not etag:
                return self.fail(400, "MalformedXML", "a part without a number or ETag", op)
            listed.append((int(number.group(1)), etag.group(1).replace("&quot;", "").strip('"')))
        # https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html:
        # parts in ascending order, each one uploaded with that ETag, every
        # part but the last at least 5 MiB.
        numbers = [n for n, _ in listed]
        if not listed or numbers != sorted(set(numbers)):
            return self.fail(400, "InvalidPartOrder", "parts must ascend", op)
        with STORE.lock:
            parts = dict(upload["parts"])
        sizes = []
        for n, etag in listed:
            if parts.get(n, (0, None))[1] != etag:
                return self.fail(400, "InvalidPart", f"part {n} was not uploaded as {etag}", op)
            sizes.append(parts[n][0])
        if any(size < MIN_PART for size in sizes[:-1]):
            return self.fail(400, "EntityTooSmall", "a part but the last is under 5 MiB", op)
        digest = hashlib.md5(b"".join(bytes.fromhex(e) for _, e in listed)).hexdigest()
        etag = f"{digest}-{len(listed)}"
        if not STORE.end_upload(upload_id):
            return self.fail(404, "NoSuchUpload", "no such upload", op)
        STORE.put(bucket, upload["index"], COMPOSED, (sum(sizes), etag, sizes))
        out = ('<?xml version="1.0" encoding="UTF-8"?>\n<CompleteMultipartUploadResult>'
               f"<Bucket>{escape(bucket.name)}</Bucket><Key>{escape(key)}</Key>"
               f"<ETag>&quot;{etag}&quot;</ETag></CompleteMultipartUploadResult>")
        return self.send(200, out.encode(), op)

    def list_uploads(self, name, query):
        prefix = query.get("prefix", [""])[0]
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult>'
               f"<Bucket>{escape(name)}</Bucket><Prefix>{escape(prefix)}</Prefix>"
               "<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>"]
        for key, upload_id in STORE.open_uploads(name, prefix):
            out.append(f"<Upload><Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
                       f"<Initiated>{LAST_MODIFIED}</Initiated>"
                       "<StorageClass>STANDARD</StorageClass></Upload>")
        out.append("</ListMultipartUploadsResult>")
        return self.send(200, "".join(out).encode(), "ListMultipartUploads")

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
    parser.add_argument("--exit-with-stdin", action="store_true",
                        help="exit when stdin closes: a test's endpoint ends with the test "
                        "process, even one that never drops it")
    args = parser.parse_args()
    if args.exit_with_stdin:
        def wait_for_eof():
            sys.stdin.buffer.read()
            os._exit(0)
        threading.Thread(target=wait_for_eof, daemon=True).start()
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
