"""moto_server, with one fix for running the state machine more than once.

moto (5.1.22) deep-copies a state machine when an execution starts, and the
copy reaches every execution already run, whose interpreter environment
holds a threading.RLock that cannot be copied: after the first execution on
a server, every StartExecution answers HTTP 500. An execution is a record
of what ran, never changed by a later one, so the copy can share it.
"""

import sys

from moto.server import main
from moto.stepfunctions.parser.backend.execution import Execution

Execution.__deepcopy__ = lambda self, memo: self

if __name__ == "__main__":
    sys.argv[0] = "moto_server"
    sys.exit(main())
