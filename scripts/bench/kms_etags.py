"""SSE-KMS ETags for chosen buckets, emulated in scripts/bench/proxy.py
(`--kms-bucket NAME`).

"Objects created by the PUT Object, POST Object, or Copy operation, or
through the AWS Management Console, and are encrypted by SSE-C or SSE-KMS,
have ETags that are not an MD5 digest of their object data" (Object.ETag,
https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html). moto and
Garage always answer MD5s, so a benchmark on them never sees what a sync
into a KMS bucket sees: equal copies with unequal ETags.

The KMS ETag of an object here is the hex MD5 of "sse-kms", the bucket, the
key and the server's real ETag (NUL-separated), with the real ETag's `-N`
kept: deterministic, so the same object answers the same ETag in every
listing and every HEAD, and other bytes answer another. (The fault proxy of
the tests, tests/support/s3_semantics.rs, also counts writes, since on AWS a
rewrite with identical bytes gets a new ETag; a benchmark never does that.)

Rewritten, for objects of a KMS bucket: `<Contents>`/`<Version>` ETags in
listings, the `ETag` header of HEAD, GET and PUT answers, the `<ETag>` of
CopyObject and CompleteMultipartUpload answers; those answers also say
`x-amz-server-side-encryption: aws:kms`. Part ETags (UploadPart,
UploadPartCopy) are left as the server made them.

Conditions naming KMS ETags (`If-Match`, and `If-None-Match` on GET and
HEAD, on an object of a KMS bucket; `x-amz-copy-source-if-match` and
`-if-none-match` on a copy whose source is in one) mean nothing to the
server: they are judged against the object's current KMS ETag (one HEAD of
it by the proxy, not counted) and sent on in the server's terms, so the
server still decides atomically with its action; a failed `If-Match` is
answered 412 here, as S3 does. A header changed that way was covered by the
client's SigV4 signature, so the request is signed again with the secret
key in AWS_SECRET_ACCESS_KEY (bench.sh exports its server's), as the
server would check it (Signature Version 4, header-based:
https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
moto checks no signature; Garage does.
"""

import hashlib
import hmac
import re
import urllib.parse

# --- the ETags ----------------------------------------------------------------


def _prefix(bucket):
    return b"sse-kms\0" + bucket.encode() + b"\0"


def kms_etag(bucket, key, real):
    """The KMS ETag (unquoted) of BUCKET/KEY whose ETag at the server is REAL.
    (rewrite_listing computes the same inline.)"""
    real = real.strip('"')
    digest = hashlib.md5(_prefix(bucket) + key.encode() + b"\0" + real.encode("ascii", "replace")).hexdigest()
    return digest + real[real.rfind("-"):] if "-" in real else digest


_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def xml_unescape(text):
    if "&" not in text:
        return text

    def one(m):
        name = m.group(1)
        if name[0] != "#":
            return _NAMED[name]
        return chr(int(name[2:], 16) if name[1] in "xX" else int(name[1:]))

    return _ENTITY.sub(one, text)


def _swap(text, bucket, key):
    """An ETag as it stood in XML or a header (`"…"`, `&quot;…&quot;`,
    `&#34;…&#34;` or bare), with the real value replaced by the KMS one and
    the quoting kept."""
    real = xml_unescape(text).strip().strip('"')
    if not real:
        return text
    return text.replace(real, kms_etag(bucket, key, real), 1)


def _listed_key(raw, url):
    """The UTF-8 key of a listing's `<Key>` text."""
    if b"&" in raw:
        raw = xml_unescape(raw.decode()).encode()
    return urllib.parse.unquote_to_bytes(raw.replace(b"+", b" ")) if url else raw


def rewrite_listing(xml, bucket, asked_url_encoding, md5=hashlib.md5):
    """A ListObjects(V2)/ListObjectVersions answer of BUCKET with every
    object's ETag in KMS terms. Keys are XML-escaped, and URL-encoded when
    the request asked for `encoding-type=url` (S3's encoding: `+` for a
    space, `%2B` for a plus; moto's `quote()` never emits a bare `+`).

    A page holds up to 1,000 objects and the proxy shares two cores with
    the server and the tool it measures, so this is plain `bytes.find` and
    bytes work, no regular expression or str per plain key: 3-4.5 ms of
    CPU for a page of 1,000 on this 2-core machine, against 0.2-0.4 ms to
    relay it untouched."""
    url = asked_url_encoding or b"<EncodingType>url</EncodingType>" in xml
    prefix = _prefix(bucket)
    for tag in (b"Contents", b"Version"):
        opening, closing = b"<%s>" % tag, b"</%s>" % tag
        if opening not in xml:
            continue
        pieces = xml.split(opening)
        for i in range(1, len(pieces)):
            piece = pieces[i]
            stop = piece.find(closing)
            # S3 and moto put the Key first; elsewhere it is looked for.
            k0 = 0 if piece.startswith(b"<Key>") else piece.find(b"<Key>", 0, stop)
            k1 = piece.find(b"</Key>", k0, stop)
            e0 = piece.find(b"<ETag>", 0, stop)
            e1 = piece.find(b"</ETag>", e0, stop)
            if k0 < 0 or k1 < 0 or e0 < 0 or e1 < 0:
                continue
            key = piece[k0 + 5:k1]
            if b"&" in key or (url and (b"%" in key or b"+" in key)):
                key = _listed_key(key, url)
            etag = piece[e0 + 6:e1]
            real = etag.replace(b"&quot;", b"").replace(b"&#34;", b"").strip(b'" ')
            if real:
                kms = md5(prefix + key + b"\0" + real).hexdigest().encode()
                if b"-" in real:
                    kms += real[real.rfind(b"-"):]
                pieces[i] = piece[:e0 + 6] + etag.replace(real, kms, 1) + piece[e1:]
        xml = opening.join(pieces)
    return xml


_ETAG = re.compile(rb"<ETag>(.*?)</ETag>", re.S)


def rewrite_result(xml, bucket, key):
    """A CopyObject or CompleteMultipartUpload answer for BUCKET/KEY with its
    `<ETag>` in KMS terms (an error inside a 200 has none, and stays)."""
    return _ETAG.sub(lambda m: b"<ETag>%s</ETag>" % _swap(m.group(1).decode("ascii", "replace"), bucket, key)
                     .encode("ascii"), xml, count=1)


def rewrite_etag_header(lines, bucket, key):
    """Raw response head lines with the `ETag` header in KMS terms, and the
    answer saying SSE-KMS (see kms_head)."""
    out = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"etag":
            etag = kms_etag(bucket, key, value.strip().decode("ascii", "replace"))
            line = b'%s: "%s"\r\n' % (name.strip(), etag.encode("ascii"))
        out.append(line)
    return kms_head(out)


def kms_head(lines):
    """Raw head lines of an answer about an SSE-KMS object: S3 says
    `x-amz-server-side-encryption: aws:kms` in HEAD, GET, PUT, CopyObject
    and CompleteMultipartUpload answers, and some tools (s3sync) skip ETag
    checks on seeing it. (The key ID S3 adds beside it is not emulated.)"""
    kept = [line for line in lines if not line.lower().startswith(b"x-amz-server-side-encryption")]
    return kept + [b"x-amz-server-side-encryption: aws:kms\r\n"]


# --- conditions ---------------------------------------------------------------------


def judge(wanted, current):
    """Whether an If-Match/If-None-Match list WANTED (raw header value)
    names the CURRENT KMS ETag of an object that exists; `*` names any."""
    tags = [t.strip().removeprefix("W/").strip('"') for t in wanted.split(",")]
    return "*" in tags or current in tags


def copy_source(value):
    """(bucket, key, versionId or None) of an `x-amz-copy-source` value
    (`[/]bucket/key[?versionId=…]`, URL-encoded)."""
    path, _, query = value.partition("?")
    bucket, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
    version = urllib.parse.parse_qs(query).get("versionId", [None])[0]
    return bucket, key, version


PRECONDITION_FAILED = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>'
    "<Message>At least one of the pre-conditions you specified did not hold</Message>"
    "<Condition>%s</Condition><RequestId>BENCHPROXY</RequestId><HostId>bench-proxy</HostId></Error>"
)

# --- SigV4 ---------------------------------------------------------------------------

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request\s*,"
    r"\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=[0-9a-f]+"
)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _uri_encode(text):
    return urllib.parse.quote(text, safe="-_.~")


def _canonical_query(query):
    pairs = []
    for piece in query.split("&"):
        if piece:
            k, _, v = piece.partition("=")
            pairs.append((_uri_encode(urllib.parse.unquote(k)), _uri_encode(urllib.parse.unquote(v))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signature(secret, method, path, query, headers, signed, date_time, scope):
    """The SigV4 signature of a request: HEADERS maps lowercase names to
    values (str); SIGNED is the sorted list of signed names; SCOPE is
    (date, region, service). The path is signed as sent: S3 neither
    normalizes it nor encodes it twice."""
    canonical = "\n".join([
        method,
        path,
        _canonical_query(query),
        "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed),
        ";".join(signed),
        headers.get("x-amz-content-sha256", EMPTY_SHA256),
    ])
    date, region, service = scope
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", date_time, f"{date}/{region}/{service}/aws4_request",
        hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest(),
    ])
    key = _hmac(("AWS4" + secret).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


class Credentials:
    """What signing a request in the client's stead needs: the client's
    Authorization (access key, scope, signed headers) and the secret key."""

    def __init__(self, authorization, secret):
        m = _AUTH.match(authorization or "")
        # Without the secret the signature is well formed but wrong: moto,
        # which checks none, still takes the request as authenticated.
        self.ok = bool(m)
        if self.ok:
            self.access_key, date, region, service, signed = m.groups()
            self.scope = (date, region, service)
            self.signed = signed.split(";")
            self.secret = secret

    def authorization(self, method, path, query, headers, signed):
        sig = signature(self.secret, method, path, query, headers, signed, headers.get("x-amz-date", ""),
                        self.scope)
        date, region, service = self.scope
        return (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{date}/{region}/{service}/aws4_request, "
                f"SignedHeaders={';'.join(signed)}, Signature={sig}")


def edit_request_head(lines, changes, credentials):
    """Raw request head LINES with header values replaced (CHANGES: lowercase
    name -> new value, None to drop it), signed again when a changed header
    was signed and the credentials allow; otherwise the old signature goes
    (moto does not check it)."""
    # Bytes kept as they came (surrogateescape), so that a non-ASCII value
    # is signed as the client signed it: its UTF-8 bytes.
    method, target, _ = lines[0].decode("utf-8", "surrogateescape").rstrip("\r\n").split(" ", 2)
    kept, headers = [lines[0]], {}
    for line in lines[1:]:
        name, _, value = line.decode("utf-8", "surrogateescape").partition(":")
        lname = name.strip().lower()
        if lname in changes:
            if changes[lname] is None:
                continue
            line = f"{name.strip()}: {changes[lname]}\r\n".encode()
            value = changes[lname]
        kept.append(line)
        headers[lname] = value.strip()
    if not (credentials.ok and any(n in credentials.signed for n in changes)):
        return kept
    signed = [n for n in credentials.signed if changes.get(n, "") is not None]
    path, _, query = target.partition("?")
    auth = credentials.authorization(method, path, query, headers, signed)
    return [(f"Authorization: {auth}\r\n".encode() if line.split(b":", 1)[0].strip().lower()
             == b"authorization" else line) for line in kept]


def head_request(host, bucket, key, version, credentials, amz_date):
    """A HEAD of BUCKET/KEY (VERSION) for the server, signed like the client's
    request when the credentials allow."""
    path = "/" + _uri_encode(bucket) + "/" + urllib.parse.quote(key, safe="/-_.~")
    query = "versionId=" + _uri_encode(version) if version else ""
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256}
    lines = [f"HEAD {path}{'?' + query if query else ''} HTTP/1.1", f"Host: {host}",
             f"x-amz-content-sha256: {EMPTY_SHA256}"]
    if credentials.ok and amz_date:
        headers["x-amz-date"] = amz_date
        lines.append(f"x-amz-date: {amz_date}")
        signed = ["host", "x-amz-content-sha256", "x-amz-date"]
        lines.append("Authorization: " + credentials.authorization("HEAD", path, query, headers, signed))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
