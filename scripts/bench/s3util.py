#!/usr/bin/env python3
"""S3 helpers for scripts/bench.sh, talking straight to the server (moto or
Garage), not through the proxy.

    s3util.py ping     ENDPOINT                             exit 0 once the server answers ListBuckets
    s3util.py seed     ENDPOINT BUCKET SHAPE COUNT [SIZE]   SHAPE: prefixed | flat | big | large
    s3util.py mutate   ENDPOINT BUCKET PERCENT              rewrite PERCENT% of the keys
    s3util.py mkbucket ENDPOINT BUCKET                      create (empty) bucket
    s3util.py rmbucket ENDPOINT BUCKET                      delete bucket and all objects
    s3util.py fresh    ENDPOINT BUCKET                      rmbucket, then mkbucket
    s3util.py compare  ENDPOINT SRC DST                     JSON: equality of key/size/ETag listings
    s3util.py seeddir  DIR COUNT BIG_COUNT BIG_SIZE [MID_COUNT]  local tree: COUNT small files, MID_COUNT
                                                        of 256 KiB-64 MiB, BIG_COUNT of BIG_SIZE
    s3util.py dirsize  COUNT BIG_COUNT BIG_SIZE [MID_COUNT]  bytes seeddir would write
    s3util.py putdir   ENDPOINT DIR BUCKET PREFIX           upload DIR's files under s3://BUCKET/PREFIX
    s3util.py compare-dir ENDPOINT DIR BUCKET PREFIX        JSON: DIR's files against s3://BUCKET/PREFIX
    s3util.py compare-tree DIR COPY                         JSON: DIR's files against COPY's, byte for byte

Content is derived from the key, so seeding is reproducible. `big` objects
are written with one PutObject each, `large` ones with a multipart upload of
8 MiB parts generated one at a time, so memory stays bounded whatever their
size (and a 6 GiB object fits: PutObject takes 5 GiB at most). Only loopback
endpoints are accepted. Credentials and region come from AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION (bench.sh sets them for its server);
without them, moto's dummies (any key works there) and us-east-1.
"""

import concurrent.futures as cf
import hashlib
import json
import os
import sys
import unicodedata
import urllib.parse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

THREADS = 16


def client(endpoint, attempts=10):
    host = urllib.parse.urlsplit(endpoint).hostname
    if host not in ("127.0.0.1", "localhost"):
        sys.exit(f"s3util.py: refusing non-loopback endpoint {endpoint}")
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=THREADS * 2,
                      retries={"max_attempts": attempts, "mode": "standard"}),
    )


MIB = 1024 * 1024
PART = 8 * MIB  # the part size bench.sh asks every tool for


def body(seed, size):
    """SIZE bytes of SEED's content. Up to a MiB: one 32-byte block repeated,
    as it always was. Above: every MiB its own bytes (chunk)."""
    if size > MIB:
        return chunk(seed, 0, size)
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def chunk(seed, offset, length):
    """LENGTH bytes of SEED's content from OFFSET (a multiple of a MiB). Each
    MiB is hashed from the seed and its index: Garage stores a 1 MiB block
    once per hash, so a repeated block would make a big object one block on
    disk, and its copies free."""
    assert offset % MIB == 0
    first = offset // MIB
    return b"".join(hashlib.shake_128(f"{seed}:{first + i}".encode()).digest(min(MIB, length - i * MIB))
                    for i in range(-(-length // MIB)))


def keys_for(shape, count):
    if shape == "prefixed":
        # Same shape as examples/seed.rs: 20 first-level prefixes.
        return [(f"data{i % 20:02}/{i:07}.bin", 100 + (i * 7919) % 1901) for i in range(count)]
    if shape == "flat":
        return [(f"flat/{i:07}.bin", 100 + (i * 7919) % 1901) for i in range(count)]
    raise ValueError(shape)


def mkbucket(s3, bucket):
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def seed(endpoint, bucket, shape, count, size=None):
    s3 = client(endpoint)
    mkbucket(s3, bucket)
    if shape == "large":
        return seed_large(s3, bucket, count, int(size))
    if shape == "big":
        objs = [(f"big/{i:03}.bin", int(size)) for i in range(count)]
    else:
        objs = keys_for(shape, count)

    def put(obj):
        key, n = obj
        s3.put_object(Bucket=bucket, Key=key, Body=body(key, n))
        return n

    with cf.ThreadPoolExecutor(4 if shape == "big" else THREADS) as pool:
        total = sum(pool.map(put, objs))
    print(f"s3util: seeded s3://{bucket}: {len(objs)} objects, {total} bytes", file=sys.stderr)


def seed_large(s3, bucket, count, size):
    """COUNT objects of SIZE bytes, each a multipart upload of PART-sized
    parts, generated part by part: at most 4 parts in memory at a time."""
    keys = [f"large/{i:03}.bin" for i in range(count)]
    uploads = {key: s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for key in keys}
    parts = [(key, offset) for key in keys for offset in range(0, size, PART)]

    def put(part):
        key, offset = part
        number = offset // PART + 1
        data = chunk(key, offset, min(PART, size - offset))
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=uploads[key], PartNumber=number, Body=data)["ETag"]
        return key, {"PartNumber": number, "ETag": etag}

    done = {key: [] for key in keys}
    with cf.ThreadPoolExecutor(4) as pool:
        for key, part in pool.map(put, parts):
            done[key].append(part)
    for key in keys:
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uploads[key],
                                     MultipartUpload={"Parts": done[key]})
    print(f"s3util: seeded s3://{bucket}: {count} objects of {size} bytes in {len(parts)} parts", file=sys.stderr)


def listing(s3, bucket):
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["Size"], o["ETag"].strip('"'))
    return out


def mutate(endpoint, bucket, percent):
    """Rewrite every (100/percent)-th key: even ones keep their size (only
    content and ETag change), odd ones grow by 17 bytes."""
    s3 = client(endpoint)
    keys = sorted(listing(s3, bucket).items())
    step = max(1, round(100 / float(percent)))
    picked = keys[::step]

    def put(i_item):
        i, (key, (size, _)) = i_item
        n = size if i % 2 == 0 else size + 17
        s3.put_object(Bucket=bucket, Key=key, Body=body(key + "#v2", n))

    with cf.ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(put, enumerate(picked)))
    print(f"s3util: rewrote {len(picked)} of {len(keys)} objects in s3://{bucket} "
          f"({(len(picked) + 1) // 2} same size, {len(picked) // 2} resized)", file=sys.stderr)


def rmbucket(endpoint, bucket):
    s3 = client(endpoint)
    try:
        keys = list(listing(s3, bucket))
    except s3.exceptions.NoSuchBucket:
        return
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    for up in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    s3.delete_bucket(Bucket=bucket)


def verdict(a, b, missing, extra, size_diff, content_diff, examples, **more):
    """The JSON every compare prints: A and B map a key to (size, ...), the
    lists name the keys that differ; content differences go in the ETag
    fields (report.py's equality columns), and MORE adds fields of its own."""
    return {
        "source_objects": len(a),
        "source_bytes": sum(v[0] for v in a.values()),
        "dest_objects": len(b),
        "missing": len(missing),
        "extra": len(extra),
        "size_mismatch": len(size_diff),
        "etag_mismatch": len(content_diff),
        "equal_key_size": not missing and not extra and not size_diff,
        "equal_etag": not missing and not extra and not size_diff and not content_diff,
        "examples": examples,
        **more,
    }


def compare(endpoint, src, dst):
    s3 = client(endpoint)
    a, b = listing(s3, src), listing(s3, dst)
    missing = [k for k in a if k not in b]
    extra = [k for k in b if k not in a]
    size_diff = [k for k in a if k in b and a[k][0] != b[k][0]]
    etag_diff = [k for k in a if k in b and a[k][1] != b[k][1]]
    # A multipart copy's ETag ("…-N") depends on the part layout the tool
    # chose, so it may differ from a single-part source's ETag legitimately.
    etag_diff_multipart = [k for k in etag_diff if "-" in b[k][1] or "-" in a[k][1]]
    result = verdict(a, b, missing, extra, size_diff, etag_diff, missing[:3] + size_diff[:3] + etag_diff[:3],
                     etag_mismatch_multipart_shape=len(etag_diff_multipart))
    print(json.dumps(result))


# Names a careless tool mangles (spaces, non-ASCII, several scripts, an
# emoji, characters URL encoding treats specially), in place of the first
# small files of seeddir: every one is a valid file name and a valid S3 key.
AWKWARD = [
    "awkward/with space.bin",
    "awkward/dir with spaces/file name.bin",
    "awkward/naïve café.bin",
    "awkward/日本語/ファイル.bin",
    "awkward/emoji 🚀.bin",
    "awkward/plus+equals=amp&.bin",
    "awkward/percent%20literal.bin",
    "awkward/(parens) [brackets] 'quote'.bin",
]


def dir_files(count, big_count, big_size, mid_count=0):
    """(relative path, size) of seeddir's tree: small files over 20 folders of
    5 subfolders each (the first ones under awkward names), then the middle
    tier, sizes spread evenly on a log scale from 256 KiB to 64 MiB (about
    11.5 MiB on average), then the big ones."""
    files = []
    for i in range(count):
        name = AWKWARD[i] if i < len(AWKWARD) else f"d{i % 20:02}/s{i // 20 % 5}/{i:07}.bin"
        files.append((name, 100 + (i * 7919) % 1901))
    files += [(f"mid/{i:04}.bin", round(256 * 1024 * 256 ** (i / max(1, mid_count - 1)))) for i in range(mid_count)]
    files += [(f"big/{i:03}.bin", big_size) for i in range(big_count)]
    return files


def seeddir(root, count, big_count, big_size, mid_count=0):
    files = dir_files(int(count), int(big_count), int(big_size), int(mid_count))
    for rel, n in files:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            if n <= MIB:
                f.write(body(rel, n))
            for offset in range(0, n if n > MIB else 0, PART):  # a part at a time: files may be large
                f.write(chunk(rel, offset, min(PART, n - offset)))
    print(f"s3util: seeded {root}: {len(files)} files, {sum(n for _, n in files)} bytes", file=sys.stderr)


def local_tree(root):
    """Relative path ('/'-separated) -> absolute path, of every file under ROOT."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root).replace(os.sep, "/")] = path
    return out


def putdir(endpoint, root, bucket, prefix):
    """ROOT's files under s3://BUCKET/PREFIX/, those over a part in PART-sized
    parts read from the file as they go (boto3's upload_file): memory stays
    bounded whatever the tree holds."""
    s3 = client(endpoint)
    mkbucket(s3, bucket)
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, use_threads=False)
    files = local_tree(root)

    def put(item):
        rel, path = item
        s3.upload_file(path, bucket, f"{prefix.strip('/')}/{rel}", Config=config)
        return os.path.getsize(path)

    with cf.ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(put, sorted(files.items())))
    print(f"s3util: put {root} into s3://{bucket}/{prefix}: {len(files)} files, {total} bytes", file=sys.stderr)


def local_etags(path, size):
    """The ETags a faithful upload of PATH can have: its MD5, and for a file
    over one part, the multipart ETag of PART-sized parts."""
    whole, parts = hashlib.md5(), []
    with open(path, "rb") as f:
        while data := f.read(PART):
            whole.update(data)
            parts.append(hashlib.md5(data).digest())
    tags = {whole.hexdigest()}
    if size > PART:
        tags.add(f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}")
    return tags


def compare_dir(endpoint, root, bucket, prefix):
    """Like compare, with DIR's files (keys: paths relative to DIR, '/'
    separated, under PREFIX) as the source. A multipart ETag counts as equal
    when it is the one 8 MiB parts give."""
    s3 = client(endpoint)
    prefix = prefix.strip("/")
    prefix = prefix + "/" if prefix else ""
    a = {prefix + rel: (os.path.getsize(path), path) for rel, path in local_tree(root).items()}
    b = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                b[o["Key"]] = (o["Size"], o["ETag"].strip('"'))
    except s3.exceptions.NoSuchBucket:
        pass  # as good as empty: every file missing
    missing = sorted(k for k in a if k not in b)
    extra = sorted(k for k in b if k not in a)
    size_diff = [k for k in a if k in b and a[k][0] != b[k][0]]
    etag_diff = [k for k in a if k in b and a[k][0] == b[k][0] and b[k][1] not in local_etags(a[k][1], a[k][0])]
    # A key that differs from a local name only by Unicode normalization is
    # the tool rewriting the name, worth telling apart from a lost file.
    renormalized = [k for k in extra if unicodedata.normalize("NFC", k) in a and k not in a]
    result = verdict(a, b, missing, extra, size_diff, etag_diff,
                     missing[:3] + extra[:3] + size_diff[:3] + etag_diff[:3],
                     etag_mismatch_multipart_shape=len([k for k in etag_diff if "-" in b[k][1]]),
                     extra_renormalized=len(renormalized))
    print(json.dumps(result, ensure_ascii=False))


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MIB), fb.read(MIB)
            if x != y:
                return False
            if not x:
                return True


def compare_tree(root, copy):
    """compare_dir's JSON for a restore: COPY's files against ROOT's, by
    relative path, size and bytes (in the ETag fields: a file has no ETag)."""
    a = {rel: (os.path.getsize(path), path) for rel, path in local_tree(root).items()}
    b = {rel: (os.path.getsize(path), path) for rel, path in local_tree(copy).items()}
    missing = sorted(k for k in a if k not in b)
    extra = sorted(k for k in b if k not in a)
    size_diff = [k for k in a if k in b and a[k][0] != b[k][0]]
    byte_diff = [k for k in a if k in b and a[k][0] == b[k][0] and not same_bytes(a[k][1], b[k][1])]
    result = verdict(a, b, missing, extra, size_diff, byte_diff,
                     missing[:3] + extra[:3] + size_diff[:3] + byte_diff[:3])
    print(json.dumps(result, ensure_ascii=False))


def main():
    cmd, *args = sys.argv[1:]
    if cmd == "ping":
        client(args[0], attempts=1).list_buckets()
    elif cmd == "seed":
        seed(args[0], args[1], args[2], int(args[3]), *args[4:])
    elif cmd == "mutate":
        mutate(*args)
    elif cmd == "mkbucket":
        mkbucket(client(args[0]), args[1])
    elif cmd == "rmbucket":
        rmbucket(*args)
    elif cmd == "fresh":
        rmbucket(*args)
        mkbucket(client(args[0]), args[1])
    elif cmd == "compare":
        compare(*args)
    elif cmd == "seeddir":
        seeddir(*args)
    elif cmd == "dirsize":
        print(sum(n for _, n in dir_files(*map(int, args))))
    elif cmd == "putdir":
        putdir(*args)
    elif cmd == "compare-dir":
        compare_dir(*args)
    elif cmd == "compare-tree":
        compare_tree(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
