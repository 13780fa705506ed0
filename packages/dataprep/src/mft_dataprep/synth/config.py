"""`SynthConfig`: every option of the synthetic corpus generator, validated before any work starts.

Default sizes are chosen for the CPU demo: about 4,300 training records of 50 to 250 tokens each; the demo's
2.6M-parameter model fine-tunes for 2000 steps of about 18 records, so it sees each record about 8 times (three
times the records, `scale: 3`, learn slower at the same step count: docs/experiments.md#demo). Text-to-code is the
largest task and the tasks are deliberately unequal.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

TaskName = Literal["text_to_code", "translation", "unit_tests", "code_explanation", "code_completion"]
TASKS: tuple[str, ...] = ("text_to_code", "translation", "unit_tests", "code_explanation", "code_completion")
EXECUTABLE_TASKS: tuple[str, ...] = ("text_to_code", "translation", "unit_tests")
# Held-out only: a new instruction form over the same functions, written for no training task (an unseen task).
UNSEEN_TASKS: tuple[str, ...] = ("rewrite",)
HELDOUT_TASKS: tuple[str, ...] = (*EXECUTABLE_TASKS, *UNSEEN_TASKS)
HeldoutTask = Literal["text_to_code", "translation", "unit_tests", "rewrite"]
# The raw format each task is written in: MFTCoder CodeExercise `chat_rounds` JSONL or Evol instruction/output
# pairs as one JSON array (the shape of the published Evol-instruction-66k file).
TASK_FORMATS: dict[str, str] = {
    "text_to_code": "chat_rounds",
    "translation": "chat_rounds",
    "code_completion": "chat_rounds",
    "unit_tests": "pairs",
    "code_explanation": "pairs",
}

DEFAULT_TRAIN = {
    "text_to_code": 2400,
    "translation": 800,
    "unit_tests": 500,
    "code_explanation": 350,
    "code_completion": 250,
}
DEFAULT_HELDOUT = {"text_to_code": 100, "translation": 50, "unit_tests": 50}
DEFAULT_HELDOUT_HARD = {"text_to_code": 50, "translation": 25, "unit_tests": 25}


class SynthConfig(BaseModel):
    """Options of `mft_dataprep.synth.generate`. Training counts are multiplied by `scale` (at least 1 each).

    The three count maps may name only some tasks: the others keep their defaults. A held-out count of 0 writes
    no file for that task and split.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    # memory grows about 30 MB per unit of scale (the held-out n-gram index), so the cap keeps it under 1 GB
    scale: float = Field(1.0, gt=0.0, le=20.0)
    train_counts: dict[TaskName, int] = Field(default_factory=lambda: dict(DEFAULT_TRAIN))
    # `rewrite` (the unseen task) defaults to 0 problems: it is written only when asked for.
    heldout_counts: dict[HeldoutTask, int] = Field(
        default_factory=lambda: dict(DEFAULT_HELDOUT)
    )
    heldout_hard_counts: dict[HeldoutTask, int] = Field(
        default_factory=lambda: dict(DEFAULT_HELDOUT_HARD)
    )
    name_syllables_min: int = Field(2, ge=1, le=6)
    name_syllables_max: int = Field(3, ge=1, le=8)
    const_min: int = Field(1, ge=0, le=99)
    const_max: int = Field(9, ge=1, le=999)
    check_asserts: int = Field(5, ge=1, le=20)  # asserts in `check` of text-to-code and translation problems
    unit_test_asserts: int = Field(3, ge=1, le=10)  # asserts in a unit-test answer (training and canonical)
    # Answers repeat the prompt's docstring (HumanEval's prompt + solution). Measured once each on this machine
    # (2.6M-parameter llama from scratch, 600 steps of 16 records): held-out text-to-code pass@1 0.30 with the
    # docstring, 0.15 without; copying it seems to train the name copying the task needs.
    answer_docstring: bool = True
    ngram: int = Field(10, ge=3, le=64)  # token n-gram size of the held-out contamination check

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if self.name_syllables_max < self.name_syllables_min:
            raise ValueError(
                f"name_syllables_max ({self.name_syllables_max}) < name_syllables_min ({self.name_syllables_min})"
            )
        if self.const_max < self.const_min + 2:
            raise ValueError(
                f"const_max ({self.const_max}) must be at least const_min + 2 ({self.const_min + 2})"
            )
        for field in ("train_counts", "heldout_counts", "heldout_hard_counts"):
            for task, count in getattr(self, field).items():
                if count < 0 or (field == "train_counts" and count < 1):
                    raise ValueError(
                        f"{field}.{task}: expected a count >= {1 if field == 'train_counts' else 0}"
                    )
        return self

    @field_validator("train_counts", "heldout_counts", "heldout_hard_counts", mode="before")
    @classmethod
    def _merge_with_defaults(cls, value: Any, info: ValidationInfo) -> Any:
        """A partial map (`{text_to_code: 3000}`) changes those tasks and keeps the defaults for the others."""
        defaults = {"train_counts": DEFAULT_TRAIN, "heldout_counts": DEFAULT_HELDOUT}.get(
            info.field_name or "", DEFAULT_HELDOUT_HARD
        )
        return {**defaults, **value} if isinstance(value, dict) else value

    def scaled_train_counts(self) -> dict[str, int]:
        return {task: max(1, round(self.train_counts[task] * self.scale)) for task in TASKS}

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
