"""Over-long policy and outcome counting: every record ends in exactly one counted outcome."""

from __future__ import annotations

import numpy as np
from mft_trainer.data.dataset import open_prepared
from mft_trainer.data.template import EncodedSample, TemplateConfig
from mft_trainer.data.tokenize import Unit, fit_to_length, tokenize_unit
from trainer_testkit import tiny_tokenizer, write_prepared_dataset


def _sample(mask: list[int], turn_ends: tuple[int, ...]) -> EncodedSample:
    return EncodedSample(np.arange(len(mask), dtype=np.int32), np.array(mask, dtype=bool), turn_ends)


# tokens: p p A A E | p p A A E   (p prompt, A answer, E eos): two rounds ending at 5 and 10
TWO_ROUNDS = _sample([0, 0, 1, 1, 1, 0, 0, 1, 1, 1], (5, 10))


def test_fits_is_kept():
    assert fit_to_length(TWO_ROUNDS, 10, "drop") == (10, "kept")
    assert fit_to_length(TWO_ROUNDS, None, "drop") == (10, "kept")


def test_drop_mode_drops():
    assert fit_to_length(TWO_ROUNDS, 9, "drop") == (0, "dropped_overlong")


def test_truncate_cuts_after_last_whole_round():
    assert fit_to_length(TWO_ROUNDS, 9, "truncate") == (5, "truncated")


def test_truncate_single_answer_keeps_its_start_and_counts_eos_cut():
    assert fit_to_length(TWO_ROUNDS, 4, "truncate") == (4, "eos_cut")


def test_truncate_prompt_too_long():
    long_prompt = _sample([0, 0, 0, 0, 0, 1, 1], (7,))
    assert fit_to_length(long_prompt, 5, "truncate") == (0, "dropped_prompt_too_long")


def test_no_supervised_target():
    assert fit_to_length(_sample([1, 0, 0], (1,)), 10, "drop") == (0, "no_supervised")


def test_unit_counts_every_outcome(tmp_path):
    tok = tiny_tokenizer()
    long = "x = 1\n" * 200
    records = {
        "t": [
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "short"}],
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": long}],
            [{"role": "user", "content": "only a question"}],
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": long},
            ],
        ]
    }
    ds = open_prepared(write_prepared_dataset(tmp_path / "ds", tasks={}, records=records, valid_per_task=0))
    shard = str(ds.shard_paths("train", "t")[0])
    cfg = TemplateConfig()
    res = tokenize_unit(Unit(shard, 0, 4, 0, "chat"), tok, cfg, 64, "truncate")
    assert dict(res.counts) == {"kept": 1, "eos_cut": 1, "invalid": 1, "truncated": 1}
    assert res.reasons == ["t-train-00002: conversation does not end with an assistant turn"]
    assert res.lengths.tolist()[1] == 64 and len(res.lengths) == 3
    res = tokenize_unit(Unit(shard, 0, 4, 0, "chat"), tok, cfg, 64, "drop")
    assert dict(res.counts) == {"kept": 1, "dropped_overlong": 2, "invalid": 1}
    assert len(res.input_ids) == int(res.lengths.sum()) == len(res.loss_mask)


def test_train_tokenizer_saves_a_loadable_byte_level_bpe(tmp_path):
    from mft_trainer.data.tokenizer_build import stdlib_python_texts, train_tokenizer
    from transformers import AutoTokenizer

    texts = list(stdlib_python_texts(200_000))
    assert 0 < sum(len(t.encode()) for t in texts) < 200_000 + max(len(t.encode()) for t in texts)
    train_tokenizer(texts, 400, tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (0, 1, 2)
    assert len(tok) == 400
    text = "def f(x):\n    return 'héllo ✓ 𝔘'\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: no unknown token, exact round trip
    assert not list(tmp_path.glob(".*tmp*"))
