"""Schemathesis hooks for .ci/run (loaded through SCHEMATHESIS_HOOKS).

A query string carries only text, so some of the invalid values schemathesis makes for a query are sent
as exactly the bytes of a valid query: `{"page": 2, "x": []}` goes out as `page=2` (an empty list sends
nothing, and so do `None` and `[[], []]`), `{"anomaly": [false]}` as `anomaly=false`, `{"page": "5"}` as
`page=5`. The service cannot tell them from the valid query and rightly answers 200, which the negative-data check would report as
invalid input accepted. This filter drops exactly those generated queries. The document has no array
parameters and positive integers are generated as numbers, so no valid query is dropped; every other
invalid one is still sent.
"""

import re

import schemathesis
from requests.models import RequestEncodingMixin


def _integer_parameters(operation):
    names = set()
    for parameter in operation.query:
        types = parameter.as_json_schema(operation).get("type", [])
        if "integer" in ([types] if isinstance(types, str) else types):
            names.add(parameter.name)
    return names


def _sent(query):
    """The query string requests makes of `query`, as schemathesis sends it."""
    return RequestEncodingMixin._encode_params(query)


@schemathesis.hook
def filter_query(context, query):
    if not query or context.operation is None:
        return True
    integers = _integer_parameters(context.operation)
    for name, value in query.items():
        # requests leaves out a `None` and empty lists, alone or in a list: a parameter that sends no bytes
        # at all was never sent.
        if _sent(query) == _sent({k: v for k, v in query.items() if k != name}):
            return False
        # requests sends each item of a list (or each key of a dict) as one `name=item`.
        if isinstance(value, (list, dict)) and len(value) <= 1:
            return False
        if name in integers and isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
            return False
    return True


@schemathesis.hook
def filter_path_parameters(context, path_parameters):
    # Following a link with invalid data, schemathesis may make a path parameter a list or a map and
    # writes its Python repr into the URL unescaped (`[{'?': None}]`: the "?" starts the query), so the
    # request sent is not the one generated. Every path parameter here is a string; other invalid
    # values are still sent.
    return not any(isinstance(value, (list, dict)) for value in (path_parameters or {}).values())


@schemathesis.hook
def filter_headers(context, headers):
    # A header value with a control character (other than tab) is refused by the HTTP layer (400, no
    # body) before the service sees it, as HTTP requires; the service cannot answer it in JSON. Only such
    # generated values of the documented headers (Idempotency-Key) are dropped; every other invalid
    # value (too long, blank, spaces, non-ASCII) is still sent.
    for value in (headers or {}).values():
        if isinstance(value, str) and any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            return False
    return True
