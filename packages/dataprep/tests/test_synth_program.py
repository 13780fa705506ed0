"""The synthetic program language: Python/Lisp printing (golden strings), mutants, every operation template."""

from __future__ import annotations

import ast
import random

import pytest
from mft_dataprep.synth.names import NameSource, random_name, reserved_words
from mft_dataprep.synth.ops import TEMPLATES, make_program, sample_args
from mft_dataprep.synth.program import (
    Bin,
    Call,
    FilterList,
    IfExp,
    IfStmt,
    Int,
    MapList,
    Method,
    Reverse,
    Str,
    Take,
    Var,
    lisp_expr,
    mutants,
    py_body,
    py_expr,
)

a, b, c, x = Var("a"), Var("b"), Var("c"), Var("x")


@pytest.mark.parametrize(
    ("tree", "python", "lisp"),
    [
        (Bin("add", a, Bin("mul", b, Int(3))), "a + b * 3", "(+ a (* b 3))"),
        (Bin("mul", Bin("add", a, b), Int(3)), "(a + b) * 3", "(* (+ a b) 3)"),
        (Bin("sub", a, Bin("sub", b, c)), "a - (b - c)", "(- a (- b c))"),
        (Bin("sub", Bin("sub", a, b), c), "a - b - c", "(- (- a b) c)"),
        (Bin("gt", Bin("gt", a, b), c), "(a > b) > c", "(> (> a b) c)"),
        (
            Bin("and", Bin("le", Int(2), a), Bin("le", a, Int(5))),
            "2 <= a and a <= 5",
            "(and (<= 2 a) (<= a 5))",
        ),
        (Bin("eq", Bin("mod", a, Int(2)), Int(0)), "a % 2 == 0", "(= (mod a 2) 0)"),
        (IfExp(Bin("gt", a, Int(3)), b, a), "b if a > 3 else a", "(if (> a 3) b a)"),
        (IfExp(a, IfExp(b, a, b), c), "(a if b else b) if a else c", "(if a (if b a b) c)"),
        (Method(Bin("concat", a, b), "upper", ()), "(a + b).upper()", "(upcase (concat a b))"),
        (Method(a, "replace", (Str("p"), Str("v"))), 'a.replace("p", "v")', '(replace a "p" "v")'),
        (Take(a, Int(2)), "a[:2]", "(take 2 a)"),
        (Take(a, Int(2), last=True), "a[-2:]", "(take-last 2 a)"),
        (Reverse(Bin("repeat", a, Int(2))), "(a * 2)[::-1]", "(reverse (repeat a 2))"),
        (MapList(Bin("add", x, Int(1)), a), "[x + 1 for x in a]", "(map (fn (x) (+ x 1)) a)"),
        (FilterList(Bin("gt", x, b), a), "[x for x in a if x > b]", "(filter (fn (x) (> x b)) a)"),
        (
            Call("len", (FilterList(Bin("gt", x, Int(4)), a),)),
            "len([x for x in a if x > 4])",
            "(length (filter (fn (x) (> x 4)) a))",
        ),
    ],
)
def test_python_and_lisp_printing(tree, python, lisp):
    assert py_expr(tree) == python
    assert lisp_expr(tree) == lisp
    ast.parse(python, mode="eval")  # valid Python


def test_parentheses_keep_meaning():
    """Evaluating the printed Python gives the tree's value: parentheses are where precedence needs them."""
    env = {"a": 7, "b": 3, "c": 2}
    assert eval(py_expr(Bin("sub", Var("a"), Bin("sub", Var("b"), Var("c")))), env) == 7 - (3 - 2)
    assert eval(py_expr(Bin("mul", Bin("add", Var("a"), Var("b")), Var("c"))), env) == (7 + 3) * 2
    assert eval(py_expr(Bin("floordiv", Var("a"), Bin("mul", Var("b"), Var("c")))), env) == 7 // (3 * 2)


def test_if_statement_body():
    assert py_body(IfStmt(Bin("gt", a, Int(3)), Bin("sub", a, Int(3)), Int(0))) == [
        "    if a > 3:",
        "        return a - 3",
        "    return 0",
    ]
    assert lisp_expr(IfStmt(Bin("gt", a, Int(3)), a, Int(0))) == "(cond ((> a 3) a) (else 0))"


def test_mutants_are_single_point_changes():
    tree = Bin("add", a, Int(3))
    got = {py_expr(m) for m in mutants(tree, {"a": "int"})}
    assert got == {"a - 3", "a * 3", "a + 4", "a + 2"}
    # a parameter is swapped only for another parameter of the same type; the loop variable never
    got = {py_expr(m) for m in mutants(MapList(Bin("add", x, a), b), {"a": "int", "b": "list"})}
    assert got == {"[x - a for x in b]", "[x * a for x in b]"}
    got = {py_expr(m) for m in mutants(Call("max", (a, b)), {"a": "int", "b": "int"})}
    assert got == {"min(a, b)", "max(b, b)", "max(a, a)"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.op)
def test_every_template_makes_a_working_program(template):
    rng = random.Random(template.op)
    names = NameSource(rng, reserved_words(), 2, 3)
    drawn = names.draw(1 + len(template.types))
    program = make_program(template, drawn[0], drawn[1:], rng, 1, 9)
    source = program.source(docstring=True)
    tree = ast.parse(source)
    assert ast.get_docstring(tree.body[0]) == program.doc
    assert program.doc.endswith(".") and all(p in program.doc for p in program.params)
    lisp = program.lisp()
    assert lisp.count("(") == lisp.count(")") and lisp.startswith(f"(defn {program.name} (")
    fn = program.compile()
    for _ in range(20):
        fn(*sample_args(program, rng))  # the reference never raises on its own inputs
    assert any(True for _ in mutants(program.body, dict(zip(program.params, program.types, strict=True))))


def test_names_avoid_keywords_builtins_and_template_words():
    rng = random.Random(0)
    reserved = reserved_words("Return the sum of")
    drawn: set[str] = set()
    source = NameSource(rng, reserved, 1, 3)
    for _ in range(300):
        drawn.update(source.draw(3))
    assert not drawn & reserved
    assert all(n.isidentifier() and n != "x" for n in drawn)
    assert len({random_name(random.Random(s), 2, 3) for s in range(200)}) > 150  # a large space, not a pool
