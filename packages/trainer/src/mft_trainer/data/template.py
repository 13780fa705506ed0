"""Conversation template and loss mask: render once, tokenize once, supervise every assistant turn and its EOS.

MFTCoder's template (docs/reference.md §2), with the default markers::

    <s>system\\n{system}\\n                 (optional, first only)
    <s>human\\n{question}\\n
    <s>bot\\n{answer}\\n<|endoftext|>\\n     (EOS is the tokenizer's eos_token; repeated per round)
             ^^^^^^^^^^^^^^^^^^^^^^^^       supervised: the answer, the newline before EOS, and EOS itself

The `<s>` is literal text. The whole conversation is rendered to one string and tokenized once with character offsets
(unlike MFTCoder, which tokenized each segment separately, so its training ids differed from inference ids); a token is
supervised when its characters overlap a supervised span. `to_chat_template` writes the same template as Jinja, which
is saved into the checkpoint's tokenizer, so `apply_chat_template(..., add_generation_prompt=True)` at inference
produces exactly the training prefix (tested in tests/data/test_template.py).

`kind: tokenizer` uses the tokenizer's own `chat_template` instead: the supervised span of assistant turn i is what
rendering messages[:i+1] adds beyond rendering messages[:i] with the generation prompt, minus trailing whitespace; it
must contain the tokenizer's EOS, or the template is rejected (a model never trained on EOS never stops).

Text records (pretraining, `kind: text` tasks) bypass the template: `encode_text` gives the raw text + EOS, all
supervised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mft_trainer.config.template import TemplateConfig


class TemplateError(ValueError):
    """A conversation or template that cannot be trained on; the message says why."""


@dataclass(frozen=True)
class EncodedSample:
    """One tokenized record.

    input_ids: token ids (int32). loss_mask: True where the token itself is supervised (not shifted; the collator
    shifts). turn_ends: for each supervised span, the index one past its last token (its EOS), in order; truncation
    cuts after one of these to keep whole rounds. boundary_straddles: tokens that cross the start of a supervised span
    (the assistant content merged with its role marker into one token), counted because there inference ids could
    differ from training ids.
    """

    input_ids: np.ndarray
    loss_mask: np.ndarray
    turn_ends: tuple[int, ...]
    boundary_straddles: int = 0


ROLES = ("system", "user", "assistant")


def validate_messages(messages: list[dict[str, Any]]) -> None:
    """Contract 1 conversation shape: optional system first; user/assistant alternate from user; end on assistant."""
    if not messages:
        raise TemplateError("empty conversation")
    body = messages
    if messages[0].get("role") == "system":
        body = messages[1:]
    if not body:
        raise TemplateError("conversation has only a system turn")
    for i, m in enumerate(body):
        role = m.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise TemplateError(f"turn {i + (len(messages) - len(body))}: role {role!r}, expected {expected!r}")
        if not isinstance(m.get("content"), str):
            raise TemplateError(f"turn {i}: content is not a string")
    if body[-1]["role"] != "assistant":
        raise TemplateError("conversation does not end with an assistant turn")


def _eos(tokenizer: Any) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise TemplateError("the tokenizer has no eos_token; set one (the model must learn to stop)")
    return eos


def render(messages: list[dict[str, Any]], tokenizer: Any, cfg: TemplateConfig) -> tuple[str, list[tuple[int, int]]]:
    """Render a whole conversation to one string and say which characters are supervised.

    Args:
        messages: `[{role, content}, ...]` with roles system (first only), user, assistant.
        tokenizer: supplies the EOS token (and, for `kind: tokenizer`, the chat template).
        cfg: the `template:` section.

    Returns:
        `(text, spans)`: spans are the supervised character ranges `[start, end)`, in order: each assistant
        answer, the newline before its EOS and the EOS itself.

    Example (kind mftcoder, EOS `<|endoftext|>`)::

        [{"role": "user", "content": "add 1"}, {"role": "assistant", "content": "x + 1"}]
        text   "<s>human\nadd 1\n<s>bot\nx + 1\n<|endoftext|>\n"
        spans                        ^^^^^^^^^^^^^^^^^^^^^^  one span: "x + 1\n<|endoftext|>"
    """
    validate_messages(messages)
    if cfg.kind == "tokenizer":
        return _render_with_tokenizer(messages, tokenizer)
    eos = _eos(tokenizer)
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0

    def add(s: str) -> None:
        nonlocal pos
        parts.append(s)
        pos += len(s)

    if cfg.add_bos:
        if not getattr(tokenizer, "bos_token", None):
            raise TemplateError("template.add_bos is true but the tokenizer has no bos_token")
        add(tokenizer.bos_token)
    for m in messages:
        role, content = m["role"], m["content"]
        if role == "system":
            add(cfg.system_prefix + content + cfg.turn_suffix)
        elif role == "user":
            add(cfg.user_prefix + content + cfg.turn_suffix)
        else:
            add(cfg.assistant_prefix)
            start = pos
            add(content + cfg.turn_suffix + eos)
            spans.append((start, pos))
            add(cfg.after_eos)
    return "".join(parts), spans


def _apply(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError("template.kind is 'tokenizer' but the tokenizer has no chat_template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _render_with_tokenizer(messages: list[dict[str, Any]], tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    eos = _eos(tokenizer)
    full = _apply(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _apply(tokenizer, messages[:i], True)
        upto = _apply(tokenizer, messages[: i + 1], False)
        if not full.startswith(prefix) or not full.startswith(upto) or not upto.startswith(prefix):
            raise TemplateError(
                "the tokenizer's chat_template is not prefix-stable (rendering earlier turns changes with later ones, "
                "e.g. reasoning removed from past turns), so the loss mask cannot be derived from it; use kind: mftcoder"
            )
        end = len(upto.rstrip())
        if eos not in upto[len(prefix) : end]:
            raise TemplateError(
                f"the tokenizer's chat_template does not end assistant turns with eos_token {eos!r}: a model trained "
                "on it never learns to stop; set the tokenizer's eos_token to the template's end-of-turn token"
            )
        spans.append((len(prefix), end))
    return full, spans


def encode(messages: list[dict[str, Any]], tokenizer: Any, cfg: TemplateConfig) -> EncodedSample:
    """Render once, tokenize once (with character offsets), supervise the tokens that overlap a supervised span.

    Args:
        messages: one conversation (see `render`).
        tokenizer: a fast Hugging Face tokenizer (offsets are needed).
        cfg: the `template:` section.

    Returns:
        An `EncodedSample`: `input_ids`, `loss_mask` (the token itself, not shifted), the end of every supervised
        turn (for truncation after a whole round), and the count of tokens that straddle a turn's start.
    """
    text, spans = render(messages, tokenizer, cfg)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int32)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return _mask_from_offsets(ids, offsets, spans, tokenizer.eos_token_id)


def _mask_from_offsets(
    ids: np.ndarray, offsets: np.ndarray, spans: list[tuple[int, int]], eos_id: int
) -> EncodedSample:
    starts, ends = offsets[:, 0], offsets[:, 1]
    nonempty = ends > starts
    mask = np.zeros(len(ids), dtype=bool)
    turn_ends: list[int] = []
    straddles = 0
    for a, b in spans:
        in_span = nonempty & (ends > a) & (starts < b)
        if not in_span.any():
            raise TemplateError(f"supervised span [{a}, {b}) covers no token")
        last = int(np.flatnonzero(in_span)[-1])
        if int(ids[last]) != eos_id:
            raise TemplateError(
                f"the supervised span [{a}, {b}) does not end with the EOS token (id {eos_id}) but with id "
                f"{int(ids[last])}: the tokenizer does not keep its eos_token whole"
            )
        straddles += int((nonempty & (starts < a) & (ends > a)).sum())
        mask |= in_span
        turn_ends.append(last + 1)
    return EncodedSample(ids, mask, tuple(turn_ends), straddles)


def validate_template(tokenizer: Any, cfg: TemplateConfig) -> None:
    """Fail before any tokenization when the template cannot produce a trainable sample with this tokenizer
    (no EOS, no chat_template for kind tokenizer, a template that never ends turns with EOS, EOS split into pieces)."""
    probe = [
        {"role": "user", "content": "Write a function."},
        {"role": "assistant", "content": "def f():\n    return 1"},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "def g():\n    return 2"},
    ]
    enc = encode(probe, tokenizer, cfg)
    if len(enc.turn_ends) != 2:
        raise TemplateError(f"template {cfg.kind!r} supervised {len(enc.turn_ends)} assistant turns of 2")


def encode_text(text: str, tokenizer: Any) -> EncodedSample:
    """A raw-text record (pretraining): its tokens + EOS, every token supervised."""
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise TemplateError("the tokenizer has no eos_token; text records end with EOS")
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = np.asarray([*body, eos_id], dtype=np.int32)
    return EncodedSample(ids, np.ones(len(ids), dtype=bool), (len(ids),), 0)


def _jinja_literal(s: str) -> str:
    # Jinja string literals are decoded with Python's unicode-escape, which reads JSON's escapes for BMP characters.
    if any(ord(c) > 0xFFFF for c in s):
        raise TemplateError(f"role marker {s!r} has a character outside the BMP, which Jinja literals cannot hold")
    return json.dumps(s)


def to_chat_template(cfg: TemplateConfig, tokenizer: Any | None = None) -> str:
    """The Jinja `chat_template` saved into the checkpoint, so inference renders exactly what training did.

    Args:
        cfg: the `template:` section.
        tokenizer: needed for `kind: tokenizer`, whose own template is returned unchanged.

    Returns:
        For `kind: mftcoder`, a template that renders character for character what `render` does (tested), with
        assistant turns wrapped in `{% generation %}` so `return_assistant_tokens_mask=True` works with it too.
    """
    if cfg.kind == "tokenizer":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise TemplateError("template.kind is 'tokenizer': pass the tokenizer, which must have a chat_template")
        return tokenizer.chat_template
    sp, up, ap = (_jinja_literal(x) for x in (cfg.system_prefix, cfg.user_prefix, cfg.assistant_prefix))
    ts, ae = _jinja_literal(cfg.turn_suffix), _jinja_literal(cfg.after_eos)
    bos = "{{- bos_token -}}" if cfg.add_bos else ""
    return (
        bos + "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}"
        f"{{{{- {sp} + message['content'] + {ts} -}}}}"
        "{%- elif message['role'] == 'user' -%}"
        f"{{{{- {up} + message['content'] + {ts} -}}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{{{- {ap} -}}}}"
        "{%- generation -%}"
        f"{{{{- message['content'] + {ts} + eos_token -}}}}"
        "{%- endgeneration -%}"
        f"{{{{- {ae} -}}}}"
        "{%- else -%}"
        "{{- raise_exception('unknown role ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- {ap} -}}}}{{%- endif -%}}"
    )


def inference_prompt(messages: list[dict[str, Any]], tokenizer: Any, cfg: TemplateConfig) -> str:
    """The text that precedes the next assistant turn (what generation starts from), rendered in Python."""
    if cfg.kind == "tokenizer":
        return _apply(tokenizer, messages, True)
    text, spans = render([*messages, {"role": "assistant", "content": ""}], tokenizer, cfg)
    return text[: spans[-1][0]]


def _encode_many(tokenizer: Any, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, offsets) per text through the Rust tokenizer directly (batched and multi-threaded); the HF wrapper's
    per-record conversion to Python lists cost a third of the time. Same ids as `tokenizer(text,
    add_special_tokens=False)` (tested)."""
    if not texts:
        return []
    out = []
    for enc in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False):
        ids = np.asarray(enc.ids, dtype=np.int32)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        out.append((ids, offsets))
    return out


def encode_batch(
    messages_list: list[list[dict[str, Any]]], tokenizer: Any, cfg: TemplateConfig
) -> list[EncodedSample | TemplateError]:
    """`encode` for many records with one batched tokenizer call; a record that fails gives its TemplateError."""
    rendered: list[tuple[str, list[tuple[int, int]]] | TemplateError] = []
    for messages in messages_list:
        try:
            rendered.append(render(messages, tokenizer, cfg))
        except TemplateError as exc:
            rendered.append(exc)
    encoded = iter(_encode_many(tokenizer, [r[0] for r in rendered if not isinstance(r, TemplateError)]))
    out: list[EncodedSample | TemplateError] = []
    for r in rendered:
        if isinstance(r, TemplateError):
            out.append(r)
            continue
        ids, offsets = next(encoded)
        try:
            out.append(_mask_from_offsets(ids, offsets, r[1], tokenizer.eos_token_id))
        except TemplateError as exc:
            out.append(exc)
    return out


def encode_text_batch(texts: list[str], tokenizer: Any) -> list[EncodedSample]:
    """`encode_text` for many records with one batched tokenizer call."""
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise TemplateError("the tokenizer has no eos_token; text records end with EOS")
    out = []
    for body, _ in _encode_many(tokenizer, texts):
        ids = np.append(body, np.int32(eos_id)).astype(np.int32)
        out.append(EncodedSample(ids, np.ones(len(ids), dtype=bool), (len(ids),), 0))
    return out
