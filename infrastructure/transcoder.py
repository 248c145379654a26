"""The event store's transcoder: eventsourcing's JSON format, decoded with orjson.

Reading events is the projections' and rebuilds' main cost, and the standard json module with an
object hook was a fifth of it. We parse with orjson, then revive the `{"_type_", "_data_"}`
objects (UUIDs, datetimes, decimals) innermost first, as the object hook did. Encoding is
unchanged (the json module's C encoder), so stored bytes stay exactly what they were.
"""

import re
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

# orjson reads an integer beyond 64 bits as a float (-2**63 - 1 becomes -9.223372036854776e18)
# instead of refusing it: any run of 19 or more digits goes to the json module, which reads it
# exactly. Such runs are rare in events (a digit string in a text field costs a slower decode).
_LONG_DIGITS = re.compile(rb"\d{19}")


class OrjsonDecodingTranscoder(JSONTranscoder):
    def decode(self, data: bytes) -> Any:
        if _LONG_DIGITS.search(data):
            return super().decode(data)
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:  # what orjson refuses (an integer beyond 64 bits, NaN)
            return super().decode(data)
        return self._revive(parsed)

    def _revive(self, value: Any) -> Any:
        if isinstance(value, dict):
            for name, item in value.items():
                if isinstance(item, dict | list):
                    value[name] = self._revive(item)
            return self._decode_obj(value)
        if isinstance(value, list):
            return [self._revive(item) if isinstance(item, dict | list) else item for item in value]
        return value
