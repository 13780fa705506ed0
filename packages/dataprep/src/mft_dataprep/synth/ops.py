"""The operation grammar: templates that turn random names and constants into a `Program`.

Each template fixes the shape of a function (its parameter types, its constants, its expression tree) and a
one-sentence docstring that says exactly what it computes, always in the same words for the same shape, so the
map from spec to code is systematic and learnable by a tiny model:

    add_const   "Return {a} plus {k0}."                          a + k0
    filter_gt   "Return the numbers in {a} that are greater than {k0}."   [x for x in a if x > k0]
    dist_stmt   "If {a} is greater than {k0}, return {a} minus {k0}; otherwise return {k0} minus {a}."
                if a > k0: return a - k0 / return k0 - a

`{a}`, `{b}`, `{c}` are the parameters in order, `{k0}`, `{k1}` the constants (numbers as digits, strings in
double quotes). A `Program` also knows how to run itself, to compute the expected values of tests.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .program import (
    LOOP_VAR,
    Bin,
    Call,
    Contains,
    FilterList,
    IfExp,
    IfStmt,
    Int,
    MapList,
    Method,
    Node,
    Reverse,
    Str,
    Take,
    Var,
    lisp_function,
    py_body,
    py_value,
    string_literal,
)

INT, STR, LIST = "int", "str", "list"
X = Var(LOOP_VAR)
Builder = Callable[[tuple[Node, ...], tuple[Node, ...]], Node]


@dataclass(frozen=True)
class Template:
    op: str
    types: tuple[str, ...]  # parameter types, in order
    consts: tuple[str, ...]  # constant kinds: num (1..9), div (2..9), char (one letter), lit (two letters)
    build: Builder
    doc: str
    valid: Callable[[tuple[Any, ...]], bool] = lambda consts: True


def _t(
    op: str, types: str, consts: str, build: Builder, doc: str, valid: Callable[..., bool] | None = None
) -> Template:
    kinds = {"i": INT, "s": STR, "l": LIST}
    return Template(
        op,
        tuple(kinds[c] for c in types),
        tuple(consts.split()) if consts else (),
        build,
        doc,
        valid or (lambda consts: True),
    )


def _distinct(consts: tuple[Any, ...]) -> bool:
    return consts[0] != consts[1]


def _increasing(consts: tuple[Any, ...]) -> bool:
    return consts[1] > consts[0] + 1


TEMPLATES: tuple[Template, ...] = (
    # integer arithmetic
    _t("add_const", "i", "num", lambda p, k: Bin("add", p[0], k[0]), "Return {a} plus {k0}."),
    _t("sub_const", "i", "num", lambda p, k: Bin("sub", p[0], k[0]), "Return {a} minus {k0}."),
    _t("mul_const", "i", "div", lambda p, k: Bin("mul", p[0], k[0]), "Return {a} times {k0}."),
    _t(
        "mod_const",
        "i",
        "div",
        lambda p, k: Bin("mod", p[0], k[0]),
        "Return the remainder of {a} divided by {k0}.",
    ),
    _t(
        "div_const",
        "i",
        "div",
        lambda p, k: Bin("floordiv", p[0], k[0]),
        "Return {a} divided by {k0}, rounded down.",
    ),
    _t(
        "linear",
        "i",
        "div num",
        lambda p, k: Bin("add", Bin("mul", p[0], k[0]), k[1]),
        "Return {a} times {k0} plus {k1}.",
    ),
    _t("add_args", "ii", "", lambda p, k: Bin("add", p[0], p[1]), "Return the sum of {a} and {b}."),
    _t("sub_args", "ii", "", lambda p, k: Bin("sub", p[0], p[1]), "Return {a} minus {b}."),
    _t("mul_args", "ii", "", lambda p, k: Bin("mul", p[0], p[1]), "Return the product of {a} and {b}."),
    _t("max_args", "ii", "", lambda p, k: Call("max", (p[0], p[1])), "Return the larger of {a} and {b}."),
    _t("min_args", "ii", "", lambda p, k: Call("min", (p[0], p[1])), "Return the smaller of {a} and {b}."),
    _t(
        "abs_diff",
        "ii",
        "",
        lambda p, k: Call("abs", (Bin("sub", p[0], p[1]),)),
        "Return the absolute difference between {a} and {b}.",
    ),
    _t(
        "sum3",
        "iii",
        "",
        lambda p, k: Bin("add", Bin("add", p[0], p[1]), p[2]),
        "Return the sum of {a}, {b} and {c}.",
    ),
    _t(
        "weighted",
        "ii",
        "div",
        lambda p, k: Bin("add", Bin("mul", p[0], k[0]), p[1]),
        "Return {a} times {k0} plus {b}.",
    ),
    # conditionals
    _t(
        "pick_gt",
        "ii",
        "num",
        lambda p, k: IfExp(Bin("gt", p[0], k[0]), p[1], p[0]),
        "Return {b} if {a} is greater than {k0}, otherwise return {a}.",
    ),
    _t(
        "if_eq",
        "ii",
        "num num",
        lambda p, k: IfExp(Bin("eq", p[0], p[1]), k[0], k[1]),
        "Return {k0} if {a} equals {b}, otherwise return {k1}.",
        _distinct,
    ),
    _t(
        "dist_stmt",
        "i",
        "num",
        lambda p, k: IfStmt(Bin("gt", p[0], k[0]), Bin("sub", p[0], k[0]), Bin("sub", k[0], p[0])),
        "If {a} is greater than {k0}, return {a} minus {k0}; otherwise return {k0} minus {a}.",
    ),
    _t(
        "cap_stmt",
        "i",
        "num",
        lambda p, k: IfStmt(Bin("gt", p[0], k[0]), k[0], p[0]),
        "If {a} is greater than {k0}, return {k0}; otherwise return {a}.",
    ),
    _t(
        "is_even",
        "i",
        "",
        lambda p, k: Bin("eq", Bin("mod", p[0], Int(2)), Int(0)),
        "Return True if {a} is even, otherwise False.",
    ),
    _t(
        "divisible",
        "i",
        "div",
        lambda p, k: Bin("eq", Bin("mod", p[0], k[0]), Int(0)),
        "Return True if {a} is divisible by {k0}, otherwise False.",
    ),
    _t(
        "between",
        "i",
        "num num",
        lambda p, k: Bin("and", Bin("le", k[0], p[0]), Bin("le", p[0], k[1])),
        "Return True if {a} is between {k0} and {k1} inclusive, otherwise False.",
        _increasing,
    ),
    # strings
    _t("upper", "s", "", lambda p, k: Method(p[0], "upper", ()), "Return {a} in upper case."),
    _t("lower", "s", "", lambda p, k: Method(p[0], "lower", ()), "Return {a} in lower case."),
    _t("reverse_str", "s", "", lambda p, k: Reverse(p[0]), "Return {a} reversed."),
    _t("repeat", "s", "div", lambda p, k: Bin("repeat", p[0], k[0]), "Return {a} repeated {k0} times."),
    _t("append_lit", "s", "lit", lambda p, k: Bin("concat", p[0], k[0]), "Return {a} followed by {k0}."),
    _t("prefix", "s", "num", lambda p, k: Take(p[0], k[0]), "Return the first {k0} characters of {a}."),
    _t(
        "suffix",
        "s",
        "num",
        lambda p, k: Take(p[0], k[0], last=True),
        "Return the last {k0} characters of {a}.",
    ),
    _t(
        "count_char",
        "s",
        "char",
        lambda p, k: Method(p[0], "count", (k[0],)),
        "Return how many times {k0} occurs in {a}.",
    ),
    _t(
        "replace_char",
        "s",
        "char char",
        lambda p, k: Method(p[0], "replace", (k[0], k[1])),
        "Return {a} with every {k0} replaced by {k1}.",
        _distinct,
    ),
    _t("join_args", "ss", "", lambda p, k: Bin("concat", p[0], p[1]), "Return {a} followed by {b}."),
    _t(
        "starts_with",
        "s",
        "lit",
        lambda p, k: Method(p[0], "startswith", (k[0],)),
        "Return True if {a} starts with {k0}, otherwise False.",
    ),
    _t(
        "longer_than",
        "s",
        "num",
        lambda p, k: Bin("gt", Call("len", (p[0],)), k[0]),
        "Return True if {a} has more than {k0} characters, otherwise False.",
    ),
    _t("str_len", "s", "", lambda p, k: Call("len", (p[0],)), "Return the number of characters in {a}."),
    # lists of integers
    _t("list_sum", "l", "", lambda p, k: Call("sum", (p[0],)), "Return the sum of the numbers in {a}."),
    _t("list_max", "l", "", lambda p, k: Call("max", (p[0],)), "Return the largest number in {a}."),
    _t("list_min", "l", "", lambda p, k: Call("min", (p[0],)), "Return the smallest number in {a}."),
    _t("list_len", "l", "", lambda p, k: Call("len", (p[0],)), "Return the number of elements in {a}."),
    _t(
        "map_add",
        "l",
        "num",
        lambda p, k: MapList(Bin("add", X, k[0]), p[0]),
        "Return a list with {k0} added to every number in {a}.",
    ),
    _t(
        "map_mul",
        "l",
        "div",
        lambda p, k: MapList(Bin("mul", X, k[0]), p[0]),
        "Return a list with every number in {a} multiplied by {k0}.",
    ),
    _t(
        "filter_gt",
        "l",
        "num",
        lambda p, k: FilterList(Bin("gt", X, k[0]), p[0]),
        "Return the numbers in {a} that are greater than {k0}.",
    ),
    _t(
        "filter_lt",
        "l",
        "num",
        lambda p, k: FilterList(Bin("lt", X, k[0]), p[0]),
        "Return the numbers in {a} that are less than {k0}.",
    ),
    _t(
        "filter_even",
        "l",
        "",
        lambda p, k: FilterList(Bin("eq", Bin("mod", X, Int(2)), Int(0)), p[0]),
        "Return the even numbers in {a}.",
    ),
    _t(
        "count_gt",
        "l",
        "num",
        lambda p, k: Call("len", (FilterList(Bin("gt", X, k[0]), p[0]),)),
        "Return how many numbers in {a} are greater than {k0}.",
    ),
    _t(
        "list_sorted", "l", "", lambda p, k: Call("sorted", (p[0],)), "Return {a} sorted in increasing order."
    ),
    _t("list_reversed", "l", "", lambda p, k: Reverse(p[0]), "Return {a} in reverse order."),
    _t("take", "l", "num", lambda p, k: Take(p[0], k[0]), "Return the first {k0} elements of {a}."),
    _t(
        "contains",
        "l",
        "num",
        lambda p, k: Contains(k[0], p[0]),
        "Return True if {a} contains {k0}, otherwise False.",
    ),
    _t(
        "sum_scaled",
        "l",
        "div",
        lambda p, k: Call("sum", (MapList(Bin("mul", X, k[0]), p[0]),)),
        "Return the sum of the numbers in {a}, each multiplied by {k0}.",
    ),
    _t(
        "map_add_arg",
        "li",
        "",
        lambda p, k: MapList(Bin("add", X, p[1]), p[0]),
        "Return a list with {b} added to every number in {a}.",
    ),
    _t(
        "filter_gt_arg",
        "li",
        "",
        lambda p, k: FilterList(Bin("gt", X, p[1]), p[0]),
        "Return the numbers in {a} that are greater than {b}.",
    ),
)
TEMPLATES_BY_OP: dict[str, Template] = {t.op: t for t in TEMPLATES}
DOC_WORDS = " ".join(t.doc for t in TEMPLATES)


@dataclass(frozen=True)
class Program:
    """One synthetic function: a template applied to names and constants."""

    op: str
    name: str
    params: tuple[str, ...]
    types: tuple[str, ...]
    consts: tuple[int | str, ...]
    body: Node
    doc: str

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes a combination new: the operation, the argument names and the constants."""
        return (self.op, self.params, self.consts)

    @property
    def signature(self) -> str:
        return f"def {self.name}({', '.join(self.params)}):"

    def body_lines(self) -> list[str]:
        return py_body(self.body)

    def source(self, docstring: bool = True) -> str:
        """The function's Python source, without a trailing newline."""
        lines = [self.signature]
        if docstring:
            lines.append(f'    """{self.doc}"""')
        return "\n".join(lines + self.body_lines())

    def lisp(self) -> str:
        return lisp_function(self.name, self.params, self.body)

    def compile(self, body: Node | None = None) -> Callable[..., Any]:
        """The function itself (or with another body, e.g. a mutant): our own generated code, trusted."""
        lines = [self.signature, *py_body(self.body if body is None else body)]
        namespace: dict[str, Any] = {}
        exec("\n".join(lines), namespace)  # noqa: S102 - the generator's own program text
        return namespace[self.name]


def _const_value(kind: str, rng: random.Random, const_min: int, const_max: int) -> int | str:
    if kind == "num":
        return rng.randint(const_min, const_max)
    if kind == "div":
        return rng.randint(max(2, const_min), max(2, const_max))
    if kind == "char":
        return rng.choice(string.ascii_lowercase)
    if kind == "lit":
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(2))
    raise ValueError(f"unknown constant kind {kind!r}")


def _doc_value(value: int | str) -> str:
    return str(value) if isinstance(value, int) else string_literal(value)


def make_program(
    template: Template,
    name: str,
    params: tuple[str, ...],
    rng: random.Random,
    const_min: int,
    const_max: int,
) -> Program:
    """Apply `template` to the given names and freshly drawn constants."""
    if len(params) != len(template.types):
        raise ValueError(f"{template.op} takes {len(template.types)} parameters, got {len(params)}")
    for _ in range(1000):
        consts = tuple(_const_value(kind, rng, const_min, const_max) for kind in template.consts)
        if template.valid(consts):
            break
    else:
        raise RuntimeError(f"{template.op}: no valid constants in {const_min}..{const_max}")
    const_nodes = tuple(Int(c) if isinstance(c, int) else Str(c) for c in consts)
    body = template.build(tuple(Var(p) for p in params), const_nodes)
    fields = dict(zip(("a", "b", "c"), params, strict=False))
    fields.update({f"k{i}": _doc_value(c) for i, c in enumerate(consts)})
    return Program(template.op, name, params, template.types, consts, body, template.doc.format(**fields))


def sample_args(program: Program, rng: random.Random) -> tuple[Any, ...]:
    """One random input tuple, biased towards the program's constants so every branch gets exercised."""
    ints = [c for c in program.consts if isinstance(c, int)]
    letters = "".join(c for c in program.consts if isinstance(c, str))
    longest = max([6, *(k + 3 for k in ints)])  # long enough for `the first k` to cut something
    args: list[Any] = []
    for kind in program.types:
        if kind == INT:
            if ints and rng.random() < 0.3:
                value = rng.choice(ints) + rng.choice((-1, 0, 0, 1))
            elif args and isinstance(args[-1], int) and rng.random() < 0.2:
                value = args[-1]
            else:  # beside a list, in the range of its items, so filters keep some and drop some
                value = rng.randint(0, 12 if LIST in program.types else 20)
            args.append(value)
        elif kind == STR:
            pool = (letters * 3 + string.ascii_lowercase) if letters else string.ascii_lowercase
            text = "".join(rng.choice(pool) for _ in range(rng.randint(2, longest)))
            if program.op == "starts_with" and rng.random() < 0.5:
                text = str(program.consts[0]) + text[:3]
            if program.op == "lower":
                text = "".join(ch.upper() if rng.random() < 0.5 else ch for ch in text)
            args.append(text)
        else:
            items = [rng.randint(0, 12) for _ in range(rng.randint(1, longest - 1))]
            if ints and rng.random() < 0.4:
                items[rng.randrange(len(items))] = ints[0]
            args.append(items)
    return tuple(args)


def call_text(name: str, args: tuple[Any, ...]) -> str:
    """`name(arg, ...)` with the arguments as Python literals."""
    return f"{name}({', '.join(py_value(a) for a in args)})"
