"""The base class every config section shares, and the error a bad config raises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem, with the file and dotted key in the message."""


class Section(BaseModel):
    """A config section: unknown keys are errors (a typo never silently falls back to a default)."""

    model_config = ConfigDict(extra="forbid")


def reject_other_spellings(data: Any, section: str, spellings: Mapping[str, str]) -> Any:
    """For a `mode="before"` validator: a key that is another spelling of a setting fails, naming the one to use.

    `spellings` maps the key here to the dotted key that holds the setting (each setting has one spelling).
    """
    if isinstance(data, Mapping):
        for key, use in spellings.items():
            if key in data:
                raise ValueError(f"{section}.{key} is not a key: the setting is `{use}`; set that instead")
    return data
