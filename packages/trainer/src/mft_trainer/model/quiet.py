"""Keep other libraries' noise out of a run's output when it tells the user nothing (one progress display per
activity: the trainer's own).

- `import_peft()`: peft imports bitsandbytes whenever it is installed, and bitsandbytes then warns on every CPU run
  that an optional 4-bit kernel package (`kernels`) is missing. Only QLoRA uses bitsandbytes, so outside QLoRA its
  warnings are dropped; full fine-tuning never imports peft (nor, therefore, bitsandbytes).
  The FutureWarning transformers raises when peft wraps, loads or saves a model (`is_gradient_checkpointing` is
  deprecated) is dropped too: it concerns peft's code, not the user's.
- `quiet_save()`: around `save_pretrained`, transformers' "Writing model shards" bar is off, and accelerate's
  unwrapping does not import DeepSpeed (which logs "Setting accelerator to CPU" on import) unless the run already
  uses it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType

# transformers 5 deprecates an attribute that peft 0.21 reads on every wrap, load and save.
PEFT_DEPRECATION = r"`is_gradient_checkpointing` is deprecated"


def import_peft(*, quantized: bool = False) -> ModuleType:
    """`import peft`, with bitsandbytes' import-time warnings dropped unless the run is QLoRA (`quantized`)."""
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATION, category=FutureWarning)
    if "peft" in sys.modules or quantized:
        import peft

        return peft
    bnb_logger = logging.getLogger("bitsandbytes")
    level = bnb_logger.level
    bnb_logger.setLevel(logging.ERROR)
    try:
        import peft
    finally:
        bnb_logger.setLevel(level)
    return peft


@contextlib.contextmanager
def quiet_save() -> Iterator[None]:
    """Silence what a checkpoint save prints that is not ours (see the module docstring)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    with contextlib.ExitStack() as stack:
        if "deepspeed" not in sys.modules:
            # accelerate.utils.other.extract_model_from_parallel imports deepspeed to isinstance-check the model
            # against DeepSpeedEngine; a run that has not imported deepspeed holds no DeepSpeedEngine.
            with contextlib.suppress(ImportError, AttributeError):
                import accelerate.utils.other as accelerate_other

                stack.enter_context(_patched(accelerate_other, "is_deepspeed_available", lambda: False))
        try:
            yield
        finally:
            if bars:
                hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _patched(module: ModuleType, name: str, value: object) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)
