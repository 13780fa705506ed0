"""Tokenized cache: key changes rebuild, same key loads; parallel build equals in-process; crashes leave nothing."""

from __future__ import annotations

import mft_trainer.data.cache as cache_mod
import numpy as np
import pytest
from mft_trainer.data.cache import load_or_build
from mft_trainer.data.dataset import open_prepared
from mft_trainer.data.template import TemplateConfig
from trainer_testkit import tiny_tokenizer, write_prepared_dataset


@pytest.fixture
def ds(tmp_path):
    return open_prepared(write_prepared_dataset(tmp_path / "ds"))


def _build(ds, cache_dir, tok=None, cfg=None, **kw):
    opts = {"seq_length": 512, "overlong": "drop", "mode": "sft", "num_workers": 0}
    opts.update(kw)
    return load_or_build(ds, "train", tok or tiny_tokenizer(), cfg or TemplateConfig(), cache_dir=cache_dir, **opts)


def test_same_key_loads_changed_key_rebuilds(ds, tmp_path):
    cache = tmp_path / "cache"
    first = _build(ds, cache)
    assert not first.loaded_from_cache
    again = _build(ds, cache)
    assert again.loaded_from_cache and again.key == first.key
    assert np.array_equal(np.asarray(again.input_ids), np.asarray(first.input_ids))
    assert isinstance(again.input_ids, np.memmap)
    keys = {first.key}
    for change in [
        {"seq_length": 256},
        {"overlong": "truncate"},
        {"mode": "pretrain"},
        {"cfg": TemplateConfig(user_prefix="<s>user\n")},
    ]:
        other = _build(ds, cache, **change)
        assert not other.loaded_from_cache, change
        keys.add(other.key)
    tok = tiny_tokenizer()
    tok.add_tokens(["<extra>"])
    keys.add(_build(ds, cache, tok=tok).key)
    assert len(keys) == 6
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_changed_manifest_rebuilds(tmp_path):
    cache = tmp_path / "cache"
    a = _build(open_prepared(write_prepared_dataset(tmp_path / "a", seed=0)), cache)
    b = _build(open_prepared(write_prepared_dataset(tmp_path / "b", seed=1)), cache)
    assert a.key != b.key and not b.loaded_from_cache


def test_entry_layout_and_counts(ds, tmp_path):
    split = _build(ds, tmp_path / "cache")
    assert split.tasks == ["chat-c", "code-a", "code-b"]
    assert np.all(np.diff(split.task_ids) >= 0)  # samples stored task by task
    assert split.offsets[-1] == len(split.input_ids) == len(split.loss_mask)
    totals = split.totals()
    assert sum(totals.values()) == 40 + 17 + 9
    assert totals["kept"] == len(split)
    ids, mask = split.sample(0)
    assert mask.any() and ids[-2] == tiny_tokenizer().eos_token_id  # ... EOS then the "\n" after it


@pytest.mark.parametrize(
    "kind", ["mftcoder", pytest.param("tokenizer", marks=pytest.mark.slow)]  # HF tokenizer workers import transformers
)
def test_parallel_build_equals_in_process(ds, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(cache_mod, "PARALLEL_MIN_RECORDS", 1)
    monkeypatch.setattr(cache_mod, "ROWS_PER_UNIT", 7)
    tok = tiny_tokenizer()
    cfg = TemplateConfig(kind=kind)
    if kind == "tokenizer":
        from mft_trainer.data.template import to_chat_template

        tok.chat_template = to_chat_template(TemplateConfig())
    serial = _build(ds, tmp_path / "c1", tok=tok, cfg=cfg, num_workers=0)
    parallel = _build(ds, tmp_path / "c2", tok=tok, cfg=cfg, num_workers=2)
    assert serial.key == parallel.key
    for name in ("input_ids", "loss_mask", "offsets", "task_ids"):
        assert np.array_equal(np.asarray(getattr(serial, name)), np.asarray(getattr(parallel, name))), name
    assert serial.counts == parallel.counts


def test_crash_during_build_leaves_no_entry(ds, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(cache_mod, "tokenize_unit", boom)
    with pytest.raises(RuntimeError, match="killed"):
        _build(ds, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("stream_format", [True, False], ids=["ipc-stream", "ipc-file"])
def test_reads_both_arrow_ipc_formats(tmp_path, stream_format):
    ds = open_prepared(write_prepared_dataset(tmp_path / "ds", stream_format=stream_format))
    assert ds.num_records("train") == 66 and ds.num_records("valid", "code-a") == 4
    first = next(ds.records("train", "code-b"))
    assert first["id"] == "code-b-train-00000" and first["messages"][-1]["role"] == "assistant"
    assert _build(ds, tmp_path / "cache").totals()["kept"] > 0


def test_missing_manifest_or_listed_shard_fails_naming_the_file(tmp_path):
    from mft_trainer.data.dataset import PreparedDatasetError

    root = write_prepared_dataset(tmp_path / "ds")
    (root / "train" / "code-a" / "part-00001.arrow").unlink()
    with pytest.raises(PreparedDatasetError, match="train/code-a/part-00001.arrow is listed but missing"):
        open_prepared(root)
    (root / "manifest.json").unlink()
    with pytest.raises(PreparedDatasetError, match="manifest.json not found"):
        open_prepared(root)
