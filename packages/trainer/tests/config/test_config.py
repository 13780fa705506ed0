"""TrainConfig: errors name the key, dotted overrides are YAML-typed, relative paths resolve, shipped configs parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mft_trainer.config import ConfigError, TrainConfig
from mft_trainer.config.loading import apply_overrides
from mft_trainer.distributed import deepspeed_config
from pydantic import ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE = {
    "model": {
        "init": {"architecture": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "intermediate_size": 64},
        "tokenizer": "tok",
    },
    "data": {"path": "prepared"},
    "output_dir": "run",
}


def write(tmp_path: Path, raw: dict, name: str = "train.yaml") -> Path:
    path = tmp_path / "conf" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_and_relative_paths_against_yaml_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "conf" / "tok").mkdir(parents=True)
    cfg = TrainConfig.from_yaml(write(tmp_path, BASE))
    assert cfg.data.path == (tmp_path / "conf" / "prepared").resolve()
    assert cfg.output_dir == (tmp_path / "conf" / "run").resolve()
    assert cfg.model.tokenizer == str((tmp_path / "conf" / "tok").resolve())  # existing relative dir
    assert (cfg.resume, cfg.packing, cfg.seed, cfg.loss.mode, cfg.distributed.backend) == (
        "auto", True, 42, "auto", "none")


def test_override_paths_resolve_against_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.from_yaml(write(tmp_path, BASE), ["data.path=elsewhere/prepared", "output_dir=/abs/run"])
    assert cfg.data.path == (tmp_path / "elsewhere" / "prepared").resolve()
    assert cfg.output_dir == Path("/abs/run")


def test_dotted_overrides_are_yaml_typed(tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml(
        write(tmp_path, BASE),
        ["optimizer.lr=1e-4", "optimizer.betas=[0.9, 0.95]", "packing=false", "seq_length=512",
         "loss.task_weights={code-a: 2.0}", "distributed.backend=fsdp2", "resume=never", "clip_grad=null",
         "schedule.kind=linear", "peft.method=full"],
    )
    assert cfg.optimizer.lr == 1e-4 and cfg.optimizer.betas == (0.9, 0.95)
    assert cfg.packing is False and cfg.seq_length == 512
    assert cfg.loss.task_weights == {"code-a": 2.0}
    assert cfg.distributed.backend == "fsdp2" and cfg.resume == "never" and cfg.clip_grad is None
    assert cfg.schedule.kind == "linear" and cfg.peft.method == "full"


def test_resume_path(tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml(write(tmp_path, BASE), ["resume=/x/checkpoints/step-5"])
    assert cfg.resume == Path("/x/checkpoints/step-5")


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        (["optimizer.lr=fast"], "optimizer.lr", "valid number"),
        (["optimizer.lrr=1"], "optimizer.lrr", "unknown key"),
        (["seq_lenght=512"], "seq_lenght", "unknown key"),
        (["packing=maybe"], "packing", "valid boolean"),
        (["micro_batch_size=0"], "micro_batch_size", "greater than or equal to 1"),
        (["distributed.backend=horovod"], "distributed.backend", "ddp"),
        (["loss.mode=mean"], "loss.mode", "token"),
        (["data.overlong=cut"], "data.overlong", "truncate"),
        (["peft.method=adalora"], "peft.method", "lora"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, overrides: list[str], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_yaml(write(tmp_path, BASE), overrides)
    message = str(info.value)
    assert f"  {key}:" in message and expected in message and "train.yaml" in message


def test_missing_required_key(tmp_path: Path) -> None:
    raw = {k: v for k, v in BASE.items() if k != "output_dir"}
    with pytest.raises(ConfigError, match=r"output_dir: Field required"):
        TrainConfig.from_yaml(write(tmp_path, raw))


def test_cross_field_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig.from_yaml(write(tmp_path, BASE), ["max_steps=5", "schedule.warmup_steps=10"])
    with pytest.raises(ConfigError, match="deepspeed_config"):
        TrainConfig.from_yaml(write(tmp_path, BASE), ["distributed.deepspeed_config=ds.json"])
    with pytest.raises(ConfigError, match="data.mode is not a key: the setting is `mode`"):
        TrainConfig.from_yaml(write(tmp_path, BASE), ["data.mode=sft"])
    cfg = TrainConfig.from_yaml(write(tmp_path, BASE), ["mode=pretrain"])
    assert cfg.mode == "pretrain"


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: run\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+: invalid YAML"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["optimizer.lr"])
    with pytest.raises(ConfigError, match="empty part"):
        apply_overrides({}, ["optimizer..lr=1"])
    with pytest.raises(ConfigError, match="seq_length is a int, not a section"):
        apply_overrides({"seq_length": 5}, ["seq_length.x=1"])
    raw: dict = {}
    assert apply_overrides(raw, ["a.b.c=3", "a.d=x y"]) == {"a.b.c", "a.d"}
    assert raw == {"a": {"b": {"c": 3}, "d": "x y"}}


def test_from_dict_raises_pydantic_error_for_the_runner(tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict(BASE, base_dir=tmp_path)
    assert cfg.output_dir == (tmp_path / "run").resolve()
    with pytest.raises(ValidationError):
        TrainConfig.from_dict({**BASE, "nope": 1}, base_dir=tmp_path)


def test_shipped_examples_parse() -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples, "no example configs shipped"
    for path in examples:
        cfg = TrainConfig.from_yaml(path, ["data.path=/tmp/any-prepared"])
        assert cfg.output_dir.is_absolute()


@pytest.mark.parametrize("stage", [2, 3])
def test_shipped_deepspeed_configs_filled_from_train_config(tmp_path: Path, stage: int) -> None:
    cfg = TrainConfig.from_yaml(
        write(tmp_path, BASE),
        ["distributed.backend=deepspeed", f"distributed.zero_stage={stage}", "micro_batch_size=2", "grad_accum=3",
         "clip_grad=0.5"],
    )
    ds = deepspeed_config(cfg, world_size=4)
    assert ds["zero_optimization"]["stage"] == stage
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (
        2, 3, 24)
    assert ds["gradient_clipping"] == 0.5
    user = tmp_path / "my_ds.json"
    user.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    cfg2 = TrainConfig.from_yaml(write(tmp_path, BASE), ["distributed.backend=deepspeed",
                                                        f"distributed.deepspeed_config={user}"])
    assert deepspeed_config(cfg2, world_size=1)["zero_optimization"]["stage"] == 3


def test_only_set_dump_round_trips(tmp_path: Path) -> None:
    cfg = TrainConfig.from_yaml(write(tmp_path, BASE), ["peft.method=full", "mode=pretrain", "optimizer.lr=0.5"])
    again = TrainConfig.from_dict(cfg.to_yaml_dict(only_set=True))
    assert again == cfg
