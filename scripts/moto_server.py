"""moto_server, with one fix for running the state machine more than once.

moto (5.1.22) deep-copies a state machine when an execution starts, and the
copy reaches every execution already run, whose interpreter environment
holds a threading.RLock that cannot be copied: after the first execution on
a server, every StartExecution answers HTTP 500. An execution is a record
of what ran, never changed by a later one, so the copy can share it.

And S3's ListObjectVersions, which moto 5.1.22 answers unlike S3 in three
ways a listing "as of" a time depends on (S3's behaviour: "Listing objects
in a versioning-enabled bucket",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/list-obj-version-enabled-bucket.html,
and https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectVersions.html):
- S3 lists a key's versions and delete markers together, newest first, so
  the Version and DeleteMarker elements of a page interleave; moto prints
  every Version of the page, then every DeleteMarker.
- A KeyMarker without a VersionIdMarker starts the listing at the first
  version of the next key; moto lists the rest of that key's versions and
  skips the first version at or after it, wherever that is.
- EncodingType=url encodes the keys of the answer; moto ignores it.
Here the answer is S3's, built from moto's own store (a key's versions are
kept oldest first, delete markers among them). A request with a delimiter
is left to moto: nothing here lists versions by folder.

And S3's event for a delete marker. A DELETE without a version id in a
versioned bucket makes a delete marker, and S3 notifies
s3:ObjectRemoved:DeleteMarkerCreated ("Supported event types",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-how-to-event-types-and-destinations.html),
whose object carries the marker's versionId and no size or eTag ("Event
message structure",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
moto 5.1.22 sends no event at all for it, so a replicator would never hear
of the delete. Here the event is sent once the marker is stored, as S3
sends it once the delete is done.

And one emulation of DynamoDB, whose transactions are atomic and isolated
("serializable isolation" between TransactWriteItems and any other write
of the items it holds: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-isolation),
and whose UpdateItem ADD is an atomic counter
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/WorkingWithItems.html#WorkingWithItems.AtomicCounters).
moto 5.1.22 serves requests on threads without a lock, and its
TransactWriteItems deep-copies every table it names before writing, then on
a failed condition puts those copies back: concurrent writes made meanwhile
are undone, and a run's counters came out 70 for 58 objects copied. Here
every DynamoDB call holds one lock, and a transaction checks all its
conditions before it writes anything, so it never needs to undo a write
(and costs no copy of a table that grows with every batch).
"""

import functools
import sys
import threading
import urllib.parse
from xml.sax.saxutils import escape

from moto.server import main
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.s3 import notifications
from moto.s3.models import FakeDeleteMarker, S3Backend
from moto.s3.responses import S3Response
from moto.stepfunctions.parser.backend.execution import Execution

Execution.__deepcopy__ = lambda self, memo: self

_DYNAMODB = threading.RLock()


def _locked(method):
    @functools.wraps(method)
    def locked(*args, **kwargs):
        with _DYNAMODB:
            return method(*args, **kwargs)

    return locked


for _name in ("put_item", "get_item", "update_item", "delete_item", "query", "scan"):
    setattr(DynamoDBBackend, _name, _locked(getattr(DynamoDBBackend, _name)))


def _item_key(backend, table_name, op_type, op):
    if op_type != "Put":
        return op["Key"]
    table = backend.get_table(table_name)
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


@_locked
def _transact_write_items(self, transact_items):
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    ops, reasons, seen = [], [], set()
    # Every condition first, as DynamoDB checks them before any write.
    for item in transact_items:
        if len(item) != 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        table_name = op["TableName"]
        key = _item_key(self, table_name, op_type, op)
        if (table_name, str(key)) in seen:
            raise MultipleTransactionsException()
        seen.add((table_name, str(key)))
        condition = op.get("ConditionExpression")
        holds = condition is None or get_filter_expression(
            condition,
            op.get("ExpressionAttributeNames"),
            op.get("ExpressionAttributeValues"),
        ).expr(self.get_item(table_name, key))
        reasons.append((None, None, None) if holds else ("ConditionalCheckFailed", "The conditional request failed", None))
        ops.append((op_type, op, table_name, key))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    for op_type, op, table_name, key in ops:
        names = op.get("ExpressionAttributeNames")
        values = op.get("ExpressionAttributeValues")
        if op_type == "Put":
            self.put_item(table_name, op["Item"])
        elif op_type == "Update":
            self.update_item(table_name, key, op["UpdateExpression"], names, values)
        elif op_type == "Delete":
            self.delete_item(table_name, key)


DynamoDBBackend.transact_write_items = _transact_write_items


_original_list_object_versions = S3Response.list_object_versions


def _list_object_versions(self):
    query = self.querystring
    if query.get("delimiter", [None])[0]:
        return _original_list_object_versions(self)
    prefix = self._get_querystring(self.request, self.uri).get("prefix", [""])[0]
    key_marker = query.get("key-marker", [None])[0]
    version_marker = query.get("version-id-marker", [None])[0]
    max_keys = int(query.get("max-keys", ["1000"])[0])
    url = query.get("encoding-type", [None])[0] == "url"
    bucket = self.backend.get_bucket(self.bucket_name)
    entries = []
    for name, versions in sorted(bucket.keys.iterlists(), key=lambda kv: kv[0]):
        if not name.startswith(prefix) or (key_marker is not None and name < key_marker):
            continue
        # Newest first; the newest is the latest, whichever page it is on.
        listed = [(name, v, i == 0) for i, v in enumerate(reversed(versions))]
        if key_marker is not None and name == key_marker:
            # A version marker: resume after that version; none: the
            # marker's key is done, and the listing starts at the next.
            ids = [_version_id(v) for _, v, _ in listed]
            at = ids.index(version_marker) + 1 if version_marker in ids else len(ids)
            listed = listed[at:]
        entries.extend(listed)
    page, rest = entries[:max_keys], entries[max_keys:]
    encode = (lambda k: urllib.parse.quote(k, safe="/")) if url else (lambda k: k)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
           f"<Name>{escape(bucket.name)}</Name><Prefix>{escape(encode(prefix))}</Prefix>",
           f"<KeyMarker>{escape(encode(key_marker or ''))}</KeyMarker>",
           f"<VersionIdMarker>{escape(version_marker or '')}</VersionIdMarker>",
           f"<MaxKeys>{max_keys}</MaxKeys>"]
    if url:
        out.append("<EncodingType>url</EncodingType>")
    if rest and page:
        last_name, last, _ = page[-1]
        out.append("<IsTruncated>true</IsTruncated>")
        out.append(f"<NextKeyMarker>{escape(encode(last_name))}</NextKeyMarker>")
        out.append(f"<NextVersionIdMarker>{escape(_version_id(last))}</NextVersionIdMarker>")
    else:
        out.append("<IsTruncated>false</IsTruncated>")
    for name, version, latest in page:
        common = (f"<Key>{escape(encode(name))}</Key><VersionId>{escape(_version_id(version))}</VersionId>"
                  f"<IsLatest>{'true' if latest else 'false'}</IsLatest>"
                  f"<LastModified>{version.last_modified_ISO8601}</LastModified>")
        if isinstance(version, FakeDeleteMarker):
            out.append(f"<DeleteMarker>{common}</DeleteMarker>")
        else:
            out.append(f"<Version>{common}<ETag>{escape(version.etag)}</ETag><Size>{version.size}</Size>"
                       f"<StorageClass>{escape(version.storage_class)}</StorageClass></Version>")
    out.append("</ListVersionsResult>")
    return "".join(out)


def _version_id(version):
    return "null" if version.version_id is None else str(version.version_id)


S3Response.list_object_versions = _list_object_versions


class _Marker:
    """A delete marker as S3's event names one: its key and version id."""

    def __init__(self, marker):
        self.name = marker.name
        self.version_id = marker.version_id
        # Read by moto's event builders, and taken out of the event below.
        self.size = 0
        self.etag = ""


_original_get_s3_event = notifications._get_s3_event


def _get_s3_event(event_name, bucket, key, notification_id):
    event = _original_get_s3_event(event_name, bucket, key, notification_id)
    if isinstance(key, _Marker):
        obj = event["Records"][0]["s3"]["object"]
        del obj["size"], obj["eTag"]
        obj["versionId"] = key.version_id
    return event


notifications._get_s3_event = _get_s3_event

_original_delete_object = S3Backend.delete_object


def _delete_object(self, bucket_name, key_name, version_id=None, bypass=False):
    done, meta = _original_delete_object(
        self, bucket_name, key_name, version_id=version_id, bypass=bypass
    )
    if done and version_id is None and meta.get("delete-marker") == "true":
        bucket = self.get_bucket(bucket_name)
        marker = next(
            (v for v in bucket.keys.getlist(key_name, [])
             if isinstance(v, FakeDeleteMarker) and v.version_id == meta.get("version-id")),
            None,
        )
        if marker is not None:
            notifications.send_event(
                self.account_id,
                notifications.S3NotificationEvent.OBJECT_REMOVED_DELETE_MARKER_CREATED_EVENT,
                bucket,
                _Marker(marker),
            )
    return done, meta


S3Backend.delete_object = _delete_object

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
