"""Plain data across the sandbox boundary: the codec between a candidate's process and the trusted test process.

Standard library only (numpy is used when it is already imported), since the sandbox server loads this file by
path inside the sandbox. Frames are a 4-byte big-endian length and UTF-8 JSON.

Values are JSON scalars (None, bool, small int, float, str) or a list whose first item is a tag::

    ["l", *items] list        ["t", *items] tuple (namedtuples too)   ["s", *items] set   ["fs", *items] frozenset
    ["d", [k, v], ...] dict    ["I", hex] big int   ["b", base64] bytes   ["ba", base64] bytearray   ["c", re, im]
    ["g", *items] an iterator or generator, materialised (the test receives a list iterator, not a list)
    ["r", start, stop, step] range   ["dk"/"dv"/"di", ...] dict views
    ["Ctr"/"OD"/"DD", [k, v], ...] Counter / OrderedDict / defaultdict   ["dq", maxlen, *items] deque
    ["Fr", num, den] Fraction   ["Dec", text] Decimal
    ["nps", dtype, value] numpy scalar   ["np", dtype, shape, nested list] ndarray
    ["h", id, type name] an object that is none of these: a handle into the candidate's process

Decoding builds only these types, numpy's when numpy is importable, and :class:`Handle` (handled by the caller),
so nothing the candidate defines (an ``__eq__``, a subclass, a metaclass) ever runs on the trusted side.
"""

from __future__ import annotations

import base64
import collections
import collections.abc
import decimal
import fractions
import json
import struct
import sys

MAX_FRAME = 64 << 20
_SMALL = 1 << 62


class WireError(Exception):
    """A frame that is not valid wire data (too large, malformed, or an unknown tag)."""


class Handle:
    """A reference to an object that stays in the candidate's process."""

    __slots__ = ("id", "type_name")

    def __init__(self, id_: int, type_name: str) -> None:
        self.id = id_
        self.type_name = type_name


# ------------------------------------------------------------------------------------------------ encoding


def encode(value, handles: dict | None = None, depth: int = 0):
    """Plain data for ``value``. Objects with no plain form are stored in ``handles`` (id -> object) and sent as a
    handle; without ``handles`` they raise TypeError."""
    if depth > 500:
        raise ValueError("value nested more than 500 levels deep")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -_SMALL < value < _SMALL else ["I", hex(value)]
    if t is float:
        return value
    d = depth + 1
    if t is list:
        return ["l", *[encode(v, handles, d) for v in value]]
    if t is tuple:
        return ["t", *[encode(v, handles, d) for v in value]]
    if t is dict:
        return ["d", *[[encode(k, handles, d), encode(v, handles, d)] for k, v in value.items()]]
    if t is set:
        return ["s", *[encode(v, handles, d) for v in value]]
    if t is frozenset:
        return ["fs", *[encode(v, handles, d) for v in value]]
    if t is bytes:
        return ["b", base64.b64encode(value).decode()]
    if t is bytearray:
        return ["ba", base64.b64encode(bytes(value)).decode()]
    if t is complex:
        return ["c", value.real, value.imag]
    if t is range:
        return ["r", value.start, value.stop, value.step]
    if t is collections.Counter or t is collections.OrderedDict or t is collections.defaultdict:
        tag = {collections.Counter: "Ctr", collections.OrderedDict: "OD", collections.defaultdict: "DD"}[t]
        return [tag, *[[encode(k, handles, d), encode(v, handles, d)] for k, v in dict.items(value)]]
    if t is collections.deque:
        return ["dq", value.maxlen, *[encode(v, handles, d) for v in value]]
    if t is fractions.Fraction:
        return ["Fr", encode(value.numerator), encode(value.denominator)]
    if t is decimal.Decimal:
        return ["Dec", str(value)]
    if t is type({}.keys()):
        return ["dk", *[encode(v, handles, d) for v in value]]
    if t is type({}.values()):
        return ["dv", *[encode(v, handles, d) for v in value]]
    if t is type({}.items()):
        return ["di", *[[encode(k, handles, d), encode(v, handles, d)] for k, v in value]]
    if isinstance(value, Handle):  # an object of the candidate's, passed back to it
        return ["h", value.id, value.type_name]
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return ["np", value.dtype.str, list(value.shape), encode(value.tolist(), handles, d)]
        if isinstance(value, numpy.generic):
            return ["nps", value.dtype.str, encode(value.item(), handles, d)]
    # subclasses of the builtin types (namedtuple, IntEnum, a str subclass) travel as their base type
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return encode(int.__index__(value))
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, tuple):
        return ["t", *[encode(v, handles, d) for v in tuple.__iter__(value)]]
    if isinstance(value, list):
        return ["l", *[encode(v, handles, d) for v in list.__iter__(value)]]
    if isinstance(value, dict):
        return ["d", *[[encode(k, handles, d), encode(v, handles, d)] for k, v in dict.items(value)]]
    if isinstance(value, set):
        return ["s", *[encode(v, handles, d) for v in set.__iter__(value)]]
    if isinstance(value, frozenset):
        return ["fs", *[encode(v, handles, d) for v in frozenset.__iter__(value)]]
    if isinstance(value, collections.abc.Iterator):
        return ["g", *[encode(v, handles, d) for v in value]]
    if handles is None:
        raise TypeError(f"a {t.__name__} cannot be sent as plain data")
    handles[id(value)] = value
    return ["h", id(value), t.__name__[:100]]


# ------------------------------------------------------------------------------------------------ decoding


def _pairs(items, handle_factory, depth):
    out = []
    for pair in items:
        if type(pair) is not list or len(pair) != 2:
            raise WireError("a mapping item is not a [key, value] pair")
        out.append((decode(pair[0], handle_factory, depth), decode(pair[1], handle_factory, depth)))
    return out


def decode(data, handle_factory=Handle, depth: int = 0):
    """The value ``data`` encodes; handles become ``handle_factory(id, type_name)``."""
    if depth > 600:
        raise WireError("value nested too deep")
    t = type(data)
    if data is None or t is bool or t is str or t is int or t is float:
        return data
    if t is not list or not data or type(data[0]) is not str:
        raise WireError(f"unexpected wire value of type {t.__name__}")
    tag, rest, d = data[0], data[1:], depth + 1
    items = lambda: [decode(v, handle_factory, d) for v in rest]  # noqa: E731
    if tag == "l":
        return items()
    if tag == "t":
        return tuple(items())
    if tag == "d":
        return dict(_pairs(rest, handle_factory, d))
    if tag == "s":
        return set(items())
    if tag == "fs":
        return frozenset(items())
    if tag == "I":
        return int(rest[0], 16)
    if tag == "b":
        return base64.b64decode(rest[0])
    if tag == "ba":
        return bytearray(base64.b64decode(rest[0]))
    if tag == "c":
        return complex(float(rest[0]), float(rest[1]))
    if tag == "g":
        return iter(items())
    if tag == "r":
        return range(*[int(x) for x in rest])
    if tag == "dk":
        return dict.fromkeys(items()).keys()
    if tag == "dv":
        return dict(enumerate(items())).values()
    if tag == "di":
        return dict(_pairs(rest, handle_factory, d)).items()
    if tag == "Ctr":
        return collections.Counter(dict(_pairs(rest, handle_factory, d)))
    if tag == "OD":
        return collections.OrderedDict(_pairs(rest, handle_factory, d))
    if tag == "DD":
        return collections.defaultdict(None, _pairs(rest, handle_factory, d))
    if tag == "dq":
        maxlen = rest[0]
        return collections.deque([decode(v, handle_factory, d) for v in rest[1:]],
                                 None if maxlen is None else int(maxlen))
    if tag == "Fr":
        return fractions.Fraction(decode(rest[0]), decode(rest[1]))
    if tag == "Dec":
        return decimal.Decimal(str(rest[0]))
    if tag == "nps":
        import numpy

        return numpy.dtype(str(rest[0])).type(decode(rest[1], handle_factory, d))
    if tag == "np":
        import numpy

        dtype, shape, nested = numpy.dtype(str(rest[0])), tuple(int(x) for x in rest[1]), decode(rest[2], handle_factory, d)
        if dtype.kind == "O":
            array = numpy.empty(shape, dtype=object)
            flat = array.reshape(-1)
            def fill(x, s):  # noqa: E306
                return [y for v in x for y in fill(v, s[1:])] if s else [x]
            for i, v in enumerate(fill(nested, shape)):
                flat[i] = v
            return array
        return numpy.array(nested, dtype=dtype).reshape(shape)
    if tag == "h":
        return handle_factory(int(rest[0]), str(rest[1]))
    raise WireError(f"unknown wire tag {tag!r}")


# -------------------------------------------------------------------------------------------------- framing


def send(sock, message) -> None:
    body = json.dumps(message, separators=(",", ":")).encode("utf-8", "surrogatepass")
    sock.sendall(struct.pack(">I", len(body)) + body)


def _recv_exact(sock, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock):
    (size,) = struct.unpack(">I", _recv_exact(sock, 4))
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes is larger than the limit of {MAX_FRAME}")
    try:
        return json.loads(_recv_exact(sock, size).decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"malformed frame: {exc}") from None
