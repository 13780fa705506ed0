"""Template and loss mask: golden rendering, masks on multi-round conversations, train/inference token identity."""

from __future__ import annotations

import numpy as np
import pytest
from mft_trainer.data.template import (
    TemplateConfig,
    TemplateError,
    encode,
    encode_batch,
    encode_text,
    inference_prompt,
    render,
    to_chat_template,
)
from trainer_testkit import EVAL_USER_TURN, sample_conversations, tiny_tokenizer

EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_mftcoder_golden_rendering(tok):
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
    text, spans = render(msgs, tok, TemplateConfig())
    assert text == (f"<s>system\nS\n<s>human\nQ1\n<s>bot\nA1\n{EOS}\n<s>human\nQ2\n<s>bot\nA2\n{EOS}\n")
    assert [text[a:b] for a, b in spans] == [f"A1\n{EOS}", f"A2\n{EOS}"]


def _supervised_text(tok, enc) -> list[str]:
    """Decoded runs of supervised tokens."""
    out, run = [], []
    for t, m in zip(enc.input_ids.tolist(), enc.loss_mask.tolist(), strict=True):
        if m:
            run.append(t)
        elif run:
            out.append(tok.decode(run))
            run = []
    if run:
        out.append(tok.decode(run))
    return out


@pytest.mark.parametrize("conv_index", range(4))
def test_mask_covers_every_assistant_turn_and_its_eos(tok, conv_index):
    conv = sample_conversations()[conv_index]
    enc = encode(conv, tok, TemplateConfig())
    answers = [m["content"] + "\n" + EOS for m in conv if m["role"] == "assistant"]
    assert _supervised_text(tok, enc) == answers
    eos_positions = np.flatnonzero(enc.input_ids == tok.eos_token_id)
    assert enc.loss_mask[eos_positions].all()
    assert list(enc.turn_ends) == [int(p) + 1 for p in eos_positions]
    # Nothing of system / user / role markers is supervised.
    assert not enc.loss_mask[: enc.turn_ends[0]][: 3].any()


def test_custom_role_markers_legacy_codefuse(tok):
    cfg = TemplateConfig(
        system_prefix="<|role_start|>system<|role_end|>",
        user_prefix="<|role_start|>human<|role_end|>",
        assistant_prefix="<|role_start|>bot<|role_end|>",
        turn_suffix="",
        after_eos="",
    )
    conv = sample_conversations()[2]
    text, _ = render(conv, tok, cfg)
    assert text.startswith("<|role_start|>human<|role_end|>first question<|role_start|>bot<|role_end|>first answer" + EOS)
    enc = encode(conv, tok, cfg)
    assert _supervised_text(tok, enc) == [m["content"] + EOS for m in conv if m["role"] == "assistant"]


@pytest.mark.parametrize(
    "cfg",
    [TemplateConfig(), TemplateConfig(add_bos=True), TemplateConfig(user_prefix="### User:\n", after_eos="")],
    ids=["default", "bos", "custom"],
)
def test_inference_prompt_from_saved_tokenizer_equals_training_ids(tok, cfg, tmp_path):
    """Save the template into the tokenizer, reload it as inference would, and compare prompts to training ids."""
    from transformers import AutoTokenizer

    tok.chat_template = to_chat_template(cfg)
    tok.save_pretrained(str(tmp_path / "ckpt"))
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "ckpt"))
    checked = 0
    for conv in sample_conversations():
        train = encode(conv, tok, cfg)
        assert saved.apply_chat_template(conv, tokenize=False) == render(conv, tok, cfg)[0]
        for k, m in enumerate(conv):
            if m["role"] != "assistant":
                continue
            prompt_ids = saved.apply_chat_template(conv[:k], add_generation_prompt=True)["input_ids"]
            assert prompt_ids == train.input_ids[: len(prompt_ids)].tolist()
            # The prompt ends exactly where the answer's supervision starts.
            assert not train.loss_mask[len(prompt_ids) - 1] and train.loss_mask[len(prompt_ids)]
            assert saved.apply_chat_template(conv[:k], tokenize=False, add_generation_prompt=True) == inference_prompt(
                conv[:k], tok, cfg
            )
            checked += 1
    assert checked == 7  # 1 + 2 + 3 + 1 assistant turns


def test_eval_user_turn_goes_through_the_saved_template(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.chat_template = to_chat_template(TemplateConfig())
    tok.save_pretrained(str(tmp_path / "ckpt"))
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "ckpt"))
    prompt = 'def add(a, b):\n    """Add a and b."""\n'
    msgs = [{"role": "user", "content": EVAL_USER_TURN.format(prompt=prompt)}]
    text = saved.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<s>human\n" + EVAL_USER_TURN.format(prompt=prompt) + "\n<s>bot\n"
    assert saved.decode(saved.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"]) == text


CHATML_WITH_EOS = (
    "{% for m in messages %}{{ '<|im|>' + m['role'] + '\\n' }}"
    "{% if m['role'] == 'assistant' %}{{ m['content'] + eos_token + '\\n' }}{% else %}{{ m['content'] + '\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im|>assistant\\n' }}{% endif %}"
)


def test_tokenizer_kind_uses_the_tokenizers_template(tok):
    tok.chat_template = CHATML_WITH_EOS
    cfg = TemplateConfig(kind="tokenizer")
    conv = sample_conversations()[1]
    enc = encode(conv, tok, cfg)
    assert _supervised_text(tok, enc) == [m["content"] + EOS for m in conv if m["role"] == "assistant"]
    assert to_chat_template(cfg, tok) == CHATML_WITH_EOS


def test_tokenizer_template_without_eos_is_rejected(tok):
    tok.chat_template = CHATML_WITH_EOS.replace(" + eos_token", "")
    with pytest.raises(TemplateError, match="never learns to stop"):
        encode(sample_conversations()[0], tok, TemplateConfig(kind="tokenizer"))


@pytest.mark.parametrize(
    "msgs, match",
    [
        ([], "empty"),
        ([{"role": "assistant", "content": "x"}], "expected 'user'"),
        ([{"role": "user", "content": "x"}], "does not end with an assistant"),
        ([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}], "expected 'assistant'"),
        ([{"role": "system", "content": "s"}], "only a system"),
    ],
)
def test_invalid_conversations_fail_loudly(tok, msgs, match):
    with pytest.raises(TemplateError, match=match):
        encode(msgs, tok, TemplateConfig())


def test_encode_batch_equals_encode_and_reports_errors(tok):
    convs = [*sample_conversations(), [{"role": "user", "content": "no answer"}]]
    out = encode_batch(convs, tok, TemplateConfig())
    for conv, got in zip(convs[:-1], out[:-1], strict=True):
        ref = encode(conv, tok, TemplateConfig())
        assert np.array_equal(ref.input_ids, got.input_ids) and np.array_equal(ref.loss_mask, got.loss_mask)
    assert isinstance(out[-1], TemplateError)


def test_token_across_marker_and_answer_is_counted_as_boundary_straddle(tok):
    """A marker ending in a space merges with the answer's first word (" f" is one token): counted, and still supervised."""
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "f = 1"}]
    enc = encode(conv, tok, TemplateConfig(assistant_prefix="<s>bot "))
    assert enc.boundary_straddles == 1
    assert encode(conv, tok, TemplateConfig()).boundary_straddles == 0


def test_text_record_is_fully_supervised_and_ends_in_eos(tok):
    enc = encode_text("import os\nprint(1)\n", tok)
    assert enc.loss_mask.all() and enc.input_ids[-1] == tok.eos_token_id
    assert tok.decode(enc.input_ids[:-1].tolist()) == "import os\nprint(1)\n"


def test_validate_template_fails_before_tokenizing(tok):
    from mft_trainer.data.template import validate_template

    validate_template(tok, TemplateConfig())
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat_template"):
        validate_template(tok, TemplateConfig(kind="tokenizer"))
