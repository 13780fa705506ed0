"""Seeded synthetic multi-task code corpus for the CPU demo: raw training files, held-out problems, prep config.

    from mft_dataprep.synth import generate
    summary = generate("work/synth", seed=0)      # raw/, heldout/, heldout_hard/, prep_tasks.yaml, manifest

Pure standard library apart from pydantic (the config); see `build.py` for the layout and the guarantees.
"""

from .build import MANIFEST, PREP_CONFIG, SynthSummary, build_corpus, generate
from .config import EXECUTABLE_TASKS, TASK_FORMATS, TASKS, SynthConfig
from .tasks import GenerationError
from .wording import EVAL_INSTRUCTION

__all__ = [
    "EVAL_INSTRUCTION",
    "EXECUTABLE_TASKS",
    "MANIFEST",
    "PREP_CONFIG",
    "TASKS",
    "TASK_FORMATS",
    "GenerationError",
    "SynthConfig",
    "SynthSummary",
    "build_corpus",
    "generate",
]
