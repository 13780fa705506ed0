"""The `template:` section: which conversation template renders training samples, and its role markers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mft_trainer.config.base import Section


class TemplateConfig(Section):
    """The `template:` config section (rendering and masks: data/template.py)."""

    kind: Literal["mftcoder", "tokenizer"] = Field(
        "mftcoder", description="mftcoder: MFTCoder's role template; tokenizer: the tokenizer's own chat_template"
    )
    system_prefix: str = "<s>system\n"
    user_prefix: str = "<s>human\n"
    assistant_prefix: str = "<s>bot\n"
    turn_suffix: str = Field("\n", description="after every system/user/assistant content (before EOS)")
    after_eos: str = Field("\n", description="text after the assistant's EOS, not supervised")
    add_bos: bool = Field(False, description="start the conversation with the tokenizer's bos_token")
