"""Generation on CPU with a tiny Llama built from a config and a BPE tokenizer trained in the test."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from mft_eval.api import EvalConfig, load_summary, run
from mft_eval.cli import app
from mft_eval.generate import BackendMissingError, DecodingConfig, HFGenerator, load_model, load_tokenizer
from mft_eval.outputs import read_jsonl
from mft_eval.problems import load_humaneval_format
from mft_eval.prompts import CHAT_INSTRUCTION, build_prompt
from typer.testing import CliRunner

PROMPTS = [
    "def add(a, b):\n",
    "import os\nclass Foo:\n    def bar(self, x, y, z):\n        return",
    "x",
    "def f(x):\n    return x +",
]


@pytest.fixture(scope="module")
def generator(tiny_checkpoint):
    tokenizer = load_tokenizer(tiny_checkpoint)
    model = load_model(tiny_checkpoint, "float32")
    return HFGenerator(model, tokenizer, [])


def test_batched_greedy_equals_one_by_one(generator):
    decoding = DecodingConfig(max_new_tokens=24)
    batched = generator.generate(PROMPTS, decoding, batch_size=4)
    single = generator.generate(PROMPTS, decoding, batch_size=1)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert all(g.num_tokens == 24 and g.stopped_by == "length" for g in batched)


def test_stop_strings_apply_per_sequence(generator):
    decoding = DecodingConfig(max_new_tokens=24)
    free = generator.generate(PROMPTS, decoding, batch_size=4)
    stop = next(m.group(0) for m in re.finditer(r"[A-Za-z]{2,}", free[0].raw_text[2:]))
    stopping = HFGenerator(generator.model, generator.tokenizer, [stop])
    stopped = stopping.generate(PROMPTS, decoding, batch_size=4)
    first = stopped[0]
    assert first.stopped_by == f"stop:{stop}"
    assert first.text == free[0].raw_text[: free[0].raw_text.index(stop)]
    assert first.num_tokens < 24 and free[0].token_ids[: first.num_tokens] == first.token_ids
    for before, after in zip(free[1:], stopped[1:], strict=True):
        if stop not in before.raw_text:  # rows that never meet the stop are untouched by row 0 leaving the batch
            assert after.token_ids == before.token_ids and after.stopped_by == "length"


def test_eos_ends_each_sequence(generator):
    decoding = DecodingConfig(max_new_tokens=24)
    free = generator.generate(PROMPTS, decoding, batch_size=4)
    eos = free[0].token_ids[5]
    ending = HFGenerator(generator.model, generator.tokenizer, [])
    ending.eos = {eos}
    ended = ending.generate(PROMPTS, decoding, batch_size=4)
    for before, after in zip(free, ended, strict=True):
        if eos in before.token_ids:
            cut = before.token_ids.index(eos)
            assert after.token_ids == before.token_ids[:cut] and after.stopped_by == "eos"
        else:
            assert after.token_ids == before.token_ids


def test_sampling_is_reproducible_with_a_seed(generator):
    one = generator.generate(PROMPTS, DecodingConfig(24, temperature=1.0, top_p=0.9, seed=1), batch_size=4)
    two = generator.generate(PROMPTS, DecodingConfig(24, temperature=1.0, top_p=0.9, seed=1), batch_size=4)
    other = generator.generate(PROMPTS, DecodingConfig(24, temperature=1.0, top_p=0.9, seed=2), batch_size=4)
    assert [g.token_ids for g in one] == [g.token_ids for g in two]
    assert [g.token_ids for g in one] != [g.token_ids for g in other]


def test_peft_adapter_generates_like_the_merged_model(tiny_checkpoint, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint), dtype="float32")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    lora.save_pretrained(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_checkpoint)
    tokenizer = load_tokenizer(adapter_dir)  # no tokenizer files in the adapter: taken from its base
    adapter_model = load_model(adapter_dir, "float32")
    merged = lora.merge_and_unload().eval()
    decoding = DecodingConfig(max_new_tokens=16)
    via_adapter = HFGenerator(adapter_model, tokenizer, []).generate(PROMPTS, decoding, batch_size=4)
    via_merged = HFGenerator(merged, tokenizer, []).generate(PROMPTS, decoding, batch_size=4)
    plain = HFGenerator(load_model(tiny_checkpoint, "float32"), tokenizer, []).generate(PROMPTS, decoding, 4)
    assert [g.token_ids for g in via_adapter] == [g.token_ids for g in via_merged]
    assert [g.token_ids for g in via_adapter] != [g.token_ids for g in plain]


def test_chat_user_turn_wording_is_fixed(held_out_file, tiny_checkpoint):
    problem = load_humaneval_format(held_out_file).problems[0]
    tokenizer = load_tokenizer(tiny_checkpoint)
    expected_user = (
        "Complete the following Python function. Answer with the whole function in a ```python code block.\n\n"
        "```python\n" + problem.prompt.rstrip() + "\n```"
    )
    assert CHAT_INSTRUCTION.format(prompt=problem.prompt.rstrip()) == expected_user
    assert build_prompt(problem, "chat", tokenizer) == f"<|user|>\n{expected_user}\n<|assistant|>\n"
    assert build_prompt(problem, "mftcoder") == f"<s>human\n# language: Python\n{problem.prompt}\n<s>bot\n"
    assert build_prompt(problem, "base") == problem.prompt


@pytest.mark.parametrize("mode", ["base", "chat", "mftcoder", None])
def test_run_end_to_end_in_each_prompt_mode(mode, tiny_checkpoint, held_out_file, tmp_path):
    config = EvalConfig(model=str(tiny_checkpoint), benchmark=str(held_out_file), output=tmp_path / "out",
                        prompt_mode=mode, max_new_tokens=16, batch_size=2, k=[1], timeout=2)
    out = run(config)
    summary = load_summary(out)
    samples = read_jsonl(out / "samples.jsonl")
    expected_mode = mode or "chat"  # the tokenizer has a chat_template
    assert summary["settings"]["prompt_mode"] == expected_mode
    assert summary["num_samples"] == 2 and summary["num_problems"] == 2
    assert sum(summary["counts"].values()) == 2
    assert set(summary["pass_at_k"]) == {"1"}
    assert [s["task_id"] for s in samples] == ["Held/0", "Held/1"]
    for s in samples:
        assert s["num_tokens"] <= 16 and s["program"]
        if expected_mode == "base":
            assert s["program"].startswith(s["prompt"]) and s["extraction"] == "prompt+completion"
        if expected_mode == "chat":
            assert s["prompt"].startswith("<|user|>\nComplete the following Python function.")
        if expected_mode == "mftcoder":
            assert s["prompt"].startswith("<s>human\n# language: Python\ndef ")
    for key in ("model", "stop", "decoding", "max_new_tokens", "dtype", "backend", "timeout_s", "harness"):
        assert key in summary["settings"]


def test_sampling_run_records_n_samples_per_problem(tiny_checkpoint, held_out_file, tmp_path):
    config = EvalConfig(model=str(tiny_checkpoint), benchmark=str(held_out_file), output=tmp_path / "out",
                        prompt_mode="base", n=3, temperature=0.8, max_new_tokens=8, k=[1, 2, 5], timeout=2)
    summary = load_summary(run(config))
    assert summary["num_samples"] == 6
    assert set(summary["pass_at_k"]) == {"1", "2"} and summary["skipped_k"] == [5]


def test_cli_run_and_report(tiny_checkpoint, held_out_file, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["run", "--model", str(tiny_checkpoint), "--benchmark", str(held_out_file),
                                 "--output", str(out), "--max-new-tokens", "8", "--k", "1", "--timeout", "2"])
    assert result.exit_code == 0, result.output
    assert "pass@1" in result.output
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0 and "tasks with no passing sample" in report.output
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 1


def test_run_accepts_an_mft_train_run_directory(tiny_checkpoint, held_out_file, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run_dir / "final")
    out = run(EvalConfig(model=str(run_dir), benchmark=str(held_out_file), output=tmp_path / "o",
                         max_new_tokens=4, k=[1], timeout=2))
    assert load_summary(out)["settings"]["model"] == str(run_dir / "final")
    with pytest.raises(FileNotFoundError, match="no config.json or adapter_config.json"):
        run(EvalConfig(model=str(tmp_path), benchmark=str(held_out_file), output=tmp_path / "p"))


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(Exception, match="temprature"):
        EvalConfig(output=tmp_path, temprature=0.2)
    with pytest.raises(Exception, match="temperature > 0"):
        EvalConfig(output=tmp_path, n=5)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_missing_gives_a_clear_error(tiny_checkpoint, held_out_file, tmp_path):
    config = EvalConfig(model=str(tiny_checkpoint), benchmark=str(held_out_file), output=tmp_path / "v",
                        backend="vllm")
    with pytest.raises(BackendMissingError, match=r"pip install 'mft-evaluation\[vllm\]'"):
        run(config)


def test_interrupted_run_continues_where_it_stopped(tiny_checkpoint, held_out_file, tmp_path, monkeypatch):
    def config(out):
        return EvalConfig(model=str(tiny_checkpoint), benchmark=str(held_out_file), output=out, prompt_mode="base",
                          max_new_tokens=12, batch_size=1, k=[1], timeout=2)

    fresh = read_jsonl(run(config(tmp_path / "fresh")) / "samples.jsonl")
    original = HFGenerator.generate_batch
    calls = {"n": 0}

    def crash_on_second_batch(self, prompts, decoding, generator):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(self, prompts, decoding, generator)

    monkeypatch.setattr(HFGenerator, "generate_batch", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run(config(tmp_path / "resumed"))
    assert not (tmp_path / "resumed" / "summary.json").exists()
    assert len(read_jsonl(tmp_path / "resumed" / "samples.partial.jsonl")) == 2  # key line + one sample
    monkeypatch.setattr(HFGenerator, "generate_batch", original)
    out = run(config(tmp_path / "resumed"))
    assert load_summary(out)["settings"]["resumed_samples"] == 1
    assert read_jsonl(out / "samples.jsonl") == fresh
    assert not (out / "samples.partial.jsonl").exists()


def test_adapter_with_base_beside_it_loads_from_any_cwd(tiny_checkpoint, tmp_path, monkeypatch):
    """mft-train names a base built from a config as `base_model`, relative to the adapter folder (Contract 2)."""
    import shutil

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter_dir = tmp_path / "final"
    shutil.copytree(tiny_checkpoint, adapter_dir / "base_model")
    base = AutoModelForCausalLM.from_pretrained(str(adapter_dir / "base_model"), dtype="float32")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    lora.save_pretrained(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "base_model"
    config_path.write_text(json.dumps(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tokenizer = load_tokenizer(adapter_dir)
    via_adapter = HFGenerator(load_model(adapter_dir, "float32"), tokenizer, []).generate(
        PROMPTS, DecodingConfig(max_new_tokens=8), batch_size=4
    )
    via_merged = HFGenerator(lora.merge_and_unload().eval(), tokenizer, []).generate(
        PROMPTS, DecodingConfig(max_new_tokens=8), batch_size=4
    )
    assert [g.token_ids for g in via_adapter] == [g.token_ids for g in via_merged]
