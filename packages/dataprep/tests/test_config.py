"""Config validation fails before any work, naming the key or path; relative paths resolve against the YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
from mft_dataprep.api import PrepConfig, config_inputs
from mft_dataprep.config import ConfigError


def _yaml(tmp: Path, text: str) -> Path:
    (tmp / "data").mkdir(exist_ok=True)
    (tmp / "data" / "a.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    path = tmp / "prep.yaml"
    path.write_text(text)
    return path


def test_relative_sources_resolve_against_yaml_folder(tmp_path, monkeypatch):
    path = _yaml(tmp_path, "tasks:\n  - name: t\n    sources: [data/*.jsonl]\n")
    monkeypatch.chdir("/")
    config = PrepConfig.from_yaml(path)
    inputs = config_inputs(config)
    assert inputs[0] == (tmp_path / "data" / "a.jsonl").resolve()
    assert inputs[1].name == "HumanEval.jsonl.gz" and len(inputs) == 2  # decontamination data is an input too


def test_from_dict_with_base_dir(tmp_path):
    _yaml(tmp_path, "")
    config = PrepConfig.from_dict({"tasks": [{"name": "t", "sources": ["data/a.jsonl"]}]}, base_dir=tmp_path)
    assert config.task_sources(config.tasks[0]) == [tmp_path.resolve() / "data" / "a.jsonl"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tasks:\n  - name: t\n    sources: [data/a.jsonl]\n    formt: auto\n", "tasks.0.formt: unknown key"),
        ("tasks:\n  - name: t\n    sources: [data/a.jsonl]\nsplit: {valid_fraction: lots}\n", "split.valid_fraction"),
        ("tasks:\n  - name: t\n    sources: [data/missing*.jsonl]\n", "tasks[0].sources[0] (t): no file matches"),
        ("tasks:\n  - sources: [data/a.jsonl]\n", "tasks.0.name: required key is missing"),
        ("tasks:\n  - {name: t, sources: [data/a.jsonl]}\n  - {name: t, sources: [data/a.jsonl]}\n", "unique"),
        ("tasks:\n  - {name: t, sources: [data/a.jsonl], kind: text, format: openai}\n", "does not apply"),
        ("tasks: [\n", "not valid YAML"),
        ("tasks:\n  - {name: t, sources: [data/a.jsonl]}\ndecontamination: {mbpp_path: nope.jsonl}\n",
         "decontamination.mbpp_path: file not found"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        PrepConfig.from_yaml(_yaml(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path / "prep.yaml") in str(err.value)


def test_config_hash_ignores_output_and_base_dir(tmp_path):
    _yaml(tmp_path, "")
    data = {"tasks": [{"name": "t", "sources": ["data/a.jsonl"]}]}
    a = PrepConfig.from_dict({**data, "output": "x"}, base_dir=tmp_path)
    b = PrepConfig.from_dict({**data, "output": "y"}, base_dir=tmp_path)
    c = PrepConfig.from_dict({**data, "max_chars": 10}, base_dir=tmp_path)
    assert a.config_hash() == b.config_hash() != c.config_hash()
