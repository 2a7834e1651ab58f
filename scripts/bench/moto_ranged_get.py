"""scripts/moto_server.py, with ranged GETs that read only their range.

    python moto_ranged_get.py -H 127.0.0.1 -p PORT     (moto_server's arguments)

For scripts/bench-transfer-memory.sh. moto 5.1.22 answers a ranged GET by
reading the whole object into memory and slicing it, so restoring (or
streaming part by part) an object of S bytes in 8 MiB ranges costs the
server S/8MiB whole-object reads: quadratic in S. At 2 GiB that is 512 GiB
of copying per run, about ten minutes of moto's CPU, and a few GiB of
moto's memory per range in flight, none of it what the benchmark measures
(s3-fanout's memory). Here a plain `Range: bytes=A-B` GET of an object
reads bytes A..B from the object's spooled buffer instead; everything else
(the key lookup, If-Match, headers, status, Content-Range, invalid ranges)
is still moto's own code, which sees an object of the right length and
slices it as before. A GET without a Range header is untouched.
"""

import os
import runpy
import sys
import threading

from moto.s3 import models, responses

_ranged = threading.local()
_value = models.FakeKey.value


class _Window:
    """Stands in for a key's bytes during a ranged GET: its length is the
    object's, and a slice of it reads just that slice from the buffer."""

    def __init__(self, key):
        self.key = key

    def __len__(self):
        return self.key.contentsize

    def __bool__(self):
        return len(self) > 0

    def __getitem__(self, index):
        if not isinstance(index, slice):
            raise TypeError("only slices")
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise TypeError("only contiguous slices")
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return self.key._value_buffer.read(max(0, stop - start))

    def whole(self):
        return _value.fget(self.key)


def _value_get(key):
    if getattr(_ranged, "on", False):
        return _Window(key)
    return _value.fget(key)


models.FakeKey.value = property(_value_get, _value.fset)

_key_response = responses.S3Response.key_response


def _key_response_ranged(self, request, *args, **kwargs):
    _ranged.on = request.method == "GET" and bool(request.headers.get("range"))
    try:
        response = _key_response(self, request, *args, **kwargs)
    finally:
        _ranged.on = False
    # Whatever moto did not slice (a multi-range or unparsable header, which
    # it answers with the whole object) goes out whole, as it would have.
    if isinstance(response, tuple) and isinstance(response[-1], _Window):
        response = (*response[:-1], response[-1].whole())
    return response


responses.S3Response.key_response = _key_response_ranged

if __name__ == "__main__":
    server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "moto_server.py")
    sys.argv[0] = server
    runpy.run_path(server, run_name="__main__")
