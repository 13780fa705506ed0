"""The tiny program language of the synthetic corpus: an expression tree rendered as Python and as Lisp.

A synthetic function is `def NAME(PARAMS): return EXPR` (or a two-branch `if` statement). The same tree is
printed in two concrete syntaxes, so translation pairs are exact by construction:

    tree    Bin("add", Var("tavo"), Bin("mul", Var("rel"), Int(3)))
    Python  tavo + rel * 3
    Lisp    (+ tavo (* rel 3))

`mutants(tree)` lists every single-point change of a tree (an operator swapped, a constant moved by one, a
branch pair swapped, ...): the unit-test task keeps one that changes the function's output as the "mutant" a
generated test must reject. The Python printer inserts the parentheses Python's precedence needs, no more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

# Binary operators: kind -> (Python symbol, Python precedence, Lisp name). Higher precedence binds tighter.
# `concat` and `repeat` are Python's `+`/`*` on strings, kept apart so Lisp can name them as it must.
BINARY: dict[str, tuple[str, int, str]] = {
    "add": ("+", 6, "+"),
    "sub": ("-", 6, "-"),
    "mul": ("*", 7, "*"),
    "floordiv": ("//", 7, "div"),
    "mod": ("%", 7, "mod"),
    "concat": ("+", 6, "concat"),
    "repeat": ("*", 7, "repeat"),
    "gt": (">", 5, ">"),
    "lt": ("<", 5, "<"),
    "ge": (">=", 5, ">="),
    "le": ("<=", 5, "<="),
    "eq": ("==", 5, "="),
    "ne": ("!=", 5, "/="),
    "and": ("and", 3, "and"),
    "or": ("or", 2, "or"),
}
_COMPARISONS = {"gt", "lt", "ge", "le", "eq", "ne"}

# Builtin calls: Python name -> Lisp name.
CALLS: dict[str, str] = {
    "max": "max",
    "min": "min",
    "abs": "abs",
    "len": "length",
    "sum": "sum",
    "sorted": "sort",
}
# String methods: Python name -> Lisp name (called as `(lisp-name obj args...)`).
METHODS: dict[str, str] = {
    "upper": "upcase",
    "lower": "downcase",
    "count": "count",
    "replace": "replace",
    "startswith": "starts-with",
    "endswith": "ends-with",
}

_IFEXP, _OR, _AND, _CMP, _ADD, _MUL, _POSTFIX, _ATOM = 1, 2, 3, 5, 6, 7, 9, 10
LOOP_VAR = "x"  # the comprehension variable; generated names never equal it


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Int:
    value: int


@dataclass(frozen=True)
class Str:
    value: str


@dataclass(frozen=True)
class Bin:
    kind: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Method:
    obj: Node
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Reverse:
    seq: Node


@dataclass(frozen=True)
class Take:
    """The first `count` items of `seq` (`last=True`: the last `count`)."""

    seq: Node
    count: Node
    last: bool = False


@dataclass(frozen=True)
class Contains:
    item: Node
    seq: Node


@dataclass(frozen=True)
class MapList:
    expr: Node  # in terms of Var(LOOP_VAR)
    seq: Node


@dataclass(frozen=True)
class FilterList:
    cond: Node  # in terms of Var(LOOP_VAR)
    seq: Node


@dataclass(frozen=True)
class IfExp:
    cond: Node
    then: Node
    orelse: Node


@dataclass(frozen=True)
class IfStmt:
    """Only at the top of a function body: `if cond: return then` / `return orelse`."""

    cond: Node
    then: Node
    orelse: Node


Node = (
    Var | Int | Str | Bin | Call | Method | Reverse | Take | Contains | MapList | FilterList | IfExp | IfStmt
)


def string_literal(value: str) -> str:
    """A double-quoted literal, valid in both Python and our Lisp (generated strings are plain ASCII letters)."""
    return json.dumps(value)


def py_value(value: object) -> str:
    """A Python literal for a test value (int, bool, str, list), with the same quoting as the programs."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return string_literal(value)
    if isinstance(value, list):
        return "[" + ", ".join(py_value(v) for v in value) + "]"
    raise TypeError(f"no literal for {type(value).__name__}: {value!r}")


def _py(node: Node) -> tuple[str, int]:
    """Python source of an expression and its precedence."""
    match node:
        case Var(name):
            return name, _ATOM
        case Int(value):
            return (str(value), _ATOM) if value >= 0 else (str(value), 8)
        case Str(value):
            return string_literal(value), _ATOM
        case Bin(kind, left, right):
            symbol, prec, _ = BINARY[kind]
            ltext, lprec = _py(left)
            rtext, rprec = _py(right)
            if kind in _COMPARISONS:  # non-associative: `a < b < c` would chain
                lwrap, rwrap = lprec <= prec, rprec <= prec
            else:  # left-associative
                lwrap, rwrap = lprec < prec, rprec <= prec
            ltext = f"({ltext})" if lwrap else ltext
            rtext = f"({rtext})" if rwrap else rtext
            return f"{ltext} {symbol} {rtext}", prec
        case Call(func, args):
            return f"{func}({', '.join(_py(a)[0] for a in args)})", _POSTFIX
        case Method(obj, name, args):
            return f"{_postfix_operand(obj)}.{name}({', '.join(_py(a)[0] for a in args)})", _POSTFIX
        case Reverse(seq):
            return f"{_postfix_operand(seq)}[::-1]", _POSTFIX
        case Take(seq, count, last):
            inner = f"-{_py(count)[0]}:" if last else f":{_py(count)[0]}"
            return f"{_postfix_operand(seq)}[{inner}]", _POSTFIX
        case Contains(item, seq):
            itext, iprec = _py(item)
            stext, sprec = _py(seq)
            return f"{_wrap(itext, iprec <= _CMP)} in {_wrap(stext, sprec <= _CMP)}", _CMP
        case MapList(expr, seq):
            return f"[{_py(expr)[0]} for {LOOP_VAR} in {_py(seq)[0]}]", _ATOM
        case FilterList(cond, seq):
            ctext, cprec = _py(cond)
            return f"[{LOOP_VAR} for {LOOP_VAR} in {_py(seq)[0]} if {_wrap(ctext, cprec <= _IFEXP)}]", _ATOM
        case IfExp(cond, then, orelse):
            ctext, cprec = _py(cond)
            ttext, tprec = _py(then)
            etext, eprec = _py(orelse)
            return (
                f"{_wrap(ttext, tprec <= _IFEXP)} if {_wrap(ctext, cprec <= _IFEXP)} else {_wrap(etext, eprec < _IFEXP)}",
                _IFEXP,
            )
    raise TypeError(f"not an expression node: {node!r}")


def _wrap(text: str, wrap: bool) -> str:
    return f"({text})" if wrap else text


def _postfix_operand(node: Node) -> str:
    text, prec = _py(node)
    return _wrap(text, prec < _POSTFIX)


def py_expr(node: Node) -> str:
    return _py(node)[0]


def py_body(body: Node, indent: str = "    ") -> list[str]:
    """The body lines of a function returning `body`."""
    if isinstance(body, IfStmt):
        return [
            f"{indent}if {py_expr(body.cond)}:",
            f"{indent}{indent}return {py_expr(body.then)}",
            f"{indent}return {py_expr(body.orelse)}",
        ]
    return [f"{indent}return {py_expr(body)}"]


def lisp_expr(node: Node) -> str:
    match node:
        case Var(name):
            return name
        case Int(value):
            return str(value)
        case Str(value):
            return string_literal(value)
        case Bin(kind, left, right):
            return f"({BINARY[kind][2]} {lisp_expr(left)} {lisp_expr(right)})"
        case Call(func, args):
            return f"({CALLS[func]} {' '.join(lisp_expr(a) for a in args)})"
        case Method(obj, name, args):
            return f"({METHODS[name]} {' '.join(lisp_expr(a) for a in (obj, *args))})"
        case Reverse(seq):
            return f"(reverse {lisp_expr(seq)})"
        case Take(seq, count, last):
            return f"({'take-last' if last else 'take'} {lisp_expr(count)} {lisp_expr(seq)})"
        case Contains(item, seq):
            return f"(member {lisp_expr(item)} {lisp_expr(seq)})"
        case MapList(expr, seq):
            return f"(map (fn ({LOOP_VAR}) {lisp_expr(expr)}) {lisp_expr(seq)})"
        case FilterList(cond, seq):
            return f"(filter (fn ({LOOP_VAR}) {lisp_expr(cond)}) {lisp_expr(seq)})"
        case IfExp(cond, then, orelse):
            return f"(if {lisp_expr(cond)} {lisp_expr(then)} {lisp_expr(orelse)})"
        case IfStmt(cond, then, orelse):
            return f"(cond ({lisp_expr(cond)} {lisp_expr(then)}) (else {lisp_expr(orelse)}))"
    raise TypeError(f"not a node: {node!r}")


def lisp_function(name: str, params: tuple[str, ...], body: Node) -> str:
    return f"(defn {name} ({' '.join(params)}) {lisp_expr(body)})"


# Single-point mutations. Each maps one node to the alternatives a careless programmer might have written.
_BIN_SWAPS: dict[str, tuple[str, ...]] = {
    "add": ("sub", "mul"),
    "sub": ("add",),
    "mul": ("add",),
    "floordiv": ("mod",),
    "mod": ("floordiv",),
    "gt": ("lt", "ge"),
    "lt": ("gt", "le"),
    "ge": ("gt",),
    "le": ("lt",),
    "eq": ("ne",),
    "ne": ("eq",),
    "and": ("or",),
    "or": ("and",),
}
_CALL_SWAPS: dict[str, tuple[str, ...]] = {"max": ("min",), "min": ("max",), "sum": ("len",), "len": ("sum",)}
_METHOD_SWAPS: dict[str, tuple[str, ...]] = {
    "upper": ("lower",),
    "lower": ("upper",),
    "startswith": ("endswith",),
    "endswith": ("startswith",),
}


def _node_mutants(node: Node, types: dict[str, str]) -> Iterator[Node]:
    """Alternatives for this node alone (children unchanged). `types` maps a parameter to its type."""
    match node:
        case Int(value):
            yield Int(value + 1)
            if value >= 2:
                yield Int(value - 1)
        case Str(value) if value:
            last = value[-1]
            yield Str(value[:-1] + ("a" if last == "z" else chr(ord(last) + 1)))
        case Var(name) if name in types:
            for other, kind in types.items():
                if other != name and kind == types[name]:
                    yield Var(other)
        case Bin(kind, left, right):
            for alt in _BIN_SWAPS.get(kind, ()):
                yield Bin(alt, left, right)
        case Call(func, args):
            for alt in _CALL_SWAPS.get(func, ()):
                yield Call(alt, args)
            if func in ("abs", "sorted"):
                yield args[0]
            if func in ("len", "sum"):  # the classic off-by-one
                yield Bin("sub", node, Int(1))
        case Method(obj, name, args):
            for alt in _METHOD_SWAPS.get(name, ()):
                yield Method(obj, alt, args)
        case Reverse(seq):
            yield seq
        case Take(seq, count, last):
            yield Take(seq, count, not last)
        case IfExp(cond, then, orelse):
            yield IfExp(cond, orelse, then)
        case IfStmt(cond, then, orelse):
            yield IfStmt(cond, orelse, then)


_CHILD_FIELDS: dict[type, tuple[str, ...]] = {
    Bin: ("left", "right"),
    Reverse: ("seq",),
    Take: ("seq", "count"),
    Contains: ("item", "seq"),
    MapList: ("expr", "seq"),
    FilterList: ("cond", "seq"),
    IfExp: ("cond", "then", "orelse"),
    IfStmt: ("cond", "then", "orelse"),
}


def mutants(node: Node, types: dict[str, str]) -> Iterator[Node]:
    """Every tree that differs from `node` by one mutation, in a fixed (deterministic) order."""
    yield from _node_mutants(node, types)
    if isinstance(node, Call):
        for i, arg in enumerate(node.args):
            for alt in mutants(arg, types):
                yield Call(node.func, node.args[:i] + (alt,) + node.args[i + 1 :])
        return
    if isinstance(node, Method):
        for alt in mutants(node.obj, types):
            yield replace(node, obj=alt)
        for i, arg in enumerate(node.args):
            for alt in mutants(arg, types):
                yield Method(node.obj, node.name, node.args[:i] + (alt,) + node.args[i + 1 :])
        return
    for field in _CHILD_FIELDS.get(type(node), ()):
        for alt in mutants(getattr(node, field), types):
            yield replace(node, **{field: alt})
