"""moto_server, with one fix for running the state machine more than once.

moto (5.1.22) deep-copies a state machine when an execution starts, and the
copy reaches every execution already run, whose interpreter environment
holds a threading.RLock that cannot be copied: after the first execution on
a server, every StartExecution answers HTTP 500. An execution is a record
of what ran, never changed by a later one, so the copy can share it.

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

from moto.server import main
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
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

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
