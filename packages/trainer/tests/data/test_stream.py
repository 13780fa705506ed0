"""The training stream: global step rows independent of the world/accum split, exact resume, rank coverage,
pretrain chunks, padded mode, eval batches, and the inspect rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mft_trainer.config.data import DataConfig
from mft_trainer.data.inspect import inspect_report, render_batch_layout, render_sample
from mft_trainer.data.packing import pad_fractions
from mft_trainer.data.stream import build_eval_batches, build_train_stream
from mft_trainer.data.template import TemplateConfig
from trainer_testkit import tiny_tokenizer, write_prepared_dataset

SEQ = 512


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ds = write_prepared_dataset(root / "ds", text_tasks={"raw": 6})
    cfg = DataConfig(path=ds, cache_dir=root / "cache", num_workers=0)
    return cfg, tiny_tokenizer()


def _stream(env, *, world=1, rank=0, accum=1, mb=2, packing=True, seed=3, mode="sft", **cfg_changes):
    cfg, tok = env
    cfg = cfg.model_copy(update=cfg_changes)
    return build_train_stream(
        cfg, TemplateConfig(), tok, seq_length=SEQ, packing=packing, micro_batch_size=mb, grad_accum=accum,
        rank=rank, world_size=world, seed=seed, mode=mode,
    )


def _row_keys(batch) -> list[tuple[int, ...]]:
    """Each row as the tuple of its sample ids in order of appearance (padding excluded)."""
    keys = []
    for row in batch["sample_ids"]:
        seen: list[int] = []
        for s in row.tolist():
            if s >= 0 and (not seen or seen[-1] != s):
                seen.append(s)
        keys.append(tuple(seen))
    return keys


def _global_rows(env, world, accum, steps, mb=2, packing=True):
    streams = [_stream(env, world=world, rank=r, accum=accum, mb=mb, packing=packing) for r in range(world)]
    out = []
    for _ in range(steps):
        step_rows = []
        for s in streams:  # rank-major, then micro-batch order = global row order
            for batch in s.next_step():
                step_rows += _row_keys(batch)
        out.append(step_rows)
    return out


def test_step_rows_do_not_depend_on_world_and_accum_split(env):
    steps = 6  # 6 steps x 8 rows crosses the first epoch boundary (about 30 rows)
    ref = _global_rows(env, 1, 4, steps)
    assert ref == _global_rows(env, 2, 2, steps)
    assert ref == _global_rows(env, 4, 1, steps)
    assert all(len(step) == 8 for step in ref)


def test_each_sample_once_per_epoch_across_ranks(env):
    streams = [_stream(env, world=2, rank=r, mb=1, packing=False) for r in range(2)]
    n = len(streams[0].split)
    assert streams[0].rows_per_epoch(0) == n
    seen: list[int] = []
    while len(seen) < 2 * n:
        for s in streams:
            for batch in s.next_step():
                seen += [k[0] for k in _row_keys(batch)]
    assert sorted(seen[:n]) == list(range(n))
    # and the next epoch is a different order of the same samples
    assert sorted(seen[n : 2 * n]) == list(range(n)) and seen[n : 2 * n] != seen[:n]


def test_resume_gives_identical_batches(env):
    full = _stream(env, accum=2)
    batches = [full.next_step() for _ in range(7)]
    first = _stream(env, accum=2)
    for _ in range(3):
        first.next_step()
    state = first.state_dict()
    resumed = _stream(env, accum=2)
    resumed.load_state_dict(state)
    assert resumed.step == 3
    for expected in batches[3:]:
        got = resumed.next_step()
        for e, g in zip(expected, got, strict=True):
            assert e.keys() == g.keys() and all(torch.equal(e[k], g[k]) for k in e)
    with pytest.raises(ValueError, match="seed"):
        _stream(env, seed=99).load_state_dict(state)


def test_targets_are_shifted_supervised_next_tokens(env):
    s = _stream(env)
    tok = env[1]
    for batch in s.next_step():
        ids, tg, seg = batch["input_ids"], batch["targets"], batch["segment_ids"]
        sup = tg != -100
        assert torch.equal(tg[:, :-1][sup[:, :-1]], ids[:, 1:][sup[:, :-1]])
        same_next = seg[:, 1:] == seg[:, :-1]
        assert not (sup[:, :-1] & ~same_next).any()  # never across a segment end
        assert not sup[:, -1].any()
        assert (tg == tok.eos_token_id).sum() >= (seg.amax(dim=1)).sum()  # every sample supervises its EOS
        assert set(batch["task_ids"][seg == 0].tolist()) <= {-1}


def test_padded_mode_width_and_pad_fraction(env):
    s = _stream(env, packing=False, mb=4)
    batch = s.next_step()[0]
    assert batch["input_ids"].shape[1] % 8 == 0
    assert int(batch["segment_ids"].max()) == 1
    lengths = (batch["segment_ids"] != 0).sum(1)
    assert batch["input_ids"].shape[1] == -(-int(lengths.max()) // 8) * 8
    assert 0 < s.stats.pad_fraction < 1


def test_task_weights_change_the_mix(env):
    s = _stream(env, task_sampling={"raw": 1.0}, epoch_size=20, packing=False, mb=10)
    batch = s.next_step()[0]
    raw = s.split.tasks.index("raw")
    assert set(batch["task_ids"][batch["segment_ids"] != 0].tolist()) == {raw}


def test_pretrain_mode_concatenates_and_chunks(env):
    s = _stream(env, mode="pretrain", mb=2)
    order = s.sampler.epoch_order(0)
    expected = np.concatenate([s.split.sample(int(i))[0] for i in order])
    got = []
    while sum(len(x) for x in got) < len(expected):
        for batch in s.next_step():
            for row, seg in zip(batch["input_ids"], batch["segment_ids"], strict=True):
                got.append(row[seg != 0].numpy())
                assert set(seg[seg != 0].tolist()) == {1}
    assert np.array_equal(np.concatenate(got)[: len(expected)], expected)
    full_chunks = len(expected) // SEQ
    assert [len(g) for g in got[: full_chunks + 1]] == [SEQ] * full_chunks + [len(expected) % SEQ]


def test_eval_batches_cover_each_sample_once_across_ranks(env):
    cfg, tok = env
    seen = []
    for rank in range(3):
        for b in build_eval_batches(cfg, TemplateConfig(), tok, seq_length=SEQ, micro_batch_size=2, packing=True,
                                    rank=rank, world_size=3):
            seen += [s for k in _row_keys(b) for s in k]
    n = len(build_eval_batches(cfg, TemplateConfig(), tok, seq_length=SEQ, micro_batch_size=1000, packing=False)[0]
            ["input_ids"])
    assert sorted(seen) == list(range(n))


def test_pad_fractions_packing_beats_padding():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5.5, 0.7, size=3000).astype(int), 16, 2048)
    rep = pad_fractions(lengths, 2048, 4)
    assert rep.packed_pad_fraction < 0.02 < rep.padded_pad_fraction


def test_render_marks_supervised_tokens(env):
    cfg, tok = env
    s = _stream(env)
    ids, mask = s.split.sample(0)
    text = render_sample(ids, mask, tok)
    assert text.count("[[") == text.count("]]") >= 1
    assert text.replace("[[", "").replace("]]", "") == tok.decode(ids.tolist())
    assert "\x1b[" in render_sample(ids, mask, tok, color=True)
    layout = render_batch_layout(s.next_step()[0], s.split.tasks)
    assert "pad fraction" in layout and "seg" in layout
    report = inspect_report(cfg, TemplateConfig(), tok, seq_length=SEQ, packing=True, micro_batch_size=2, task="raw",
                            n=1)
    assert "=== task raw" in report and "=== task code-a" not in report
    with pytest.raises(ValueError, match="not a task"):
        inspect_report(cfg, TemplateConfig(), tok, seq_length=SEQ, packing=True, micro_batch_size=2, task="nope")


def test_inspect_takes_a_train_config(env, monkeypatch):
    """The CLI's entry: render.inspect(TrainConfig, ...) with the tokenizer the model section names."""
    from types import SimpleNamespace

    from mft_trainer.data import inspect as render
    from mft_trainer.model import build

    cfg, tok = env
    monkeypatch.setattr(build, "load_tokenizer", lambda model_cfg: tok)
    train_cfg = SimpleNamespace(model=None, data=cfg, template=TemplateConfig(), seq_length=SEQ, packing=False,
                                micro_batch_size=4, seed=0, mode="sft")
    text = render.inspect(train_cfg, task="code-a", n=1, plain=True)
    assert "[[" in text and "first micro-batch (padded)" in text and "pad fraction packed" in text
    assert "pad_fraction" in _stream(env).stats.as_dict()
