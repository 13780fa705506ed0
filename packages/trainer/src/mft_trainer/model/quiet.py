"""Keep other libraries' noise out of a run's output when it tells the user nothing (one progress display per
activity: the trainer's own).

- `import_peft()`: peft imports bitsandbytes whenever it is installed (at import, and again in its LoRA layer
  dispatch, so hiding it from one import does not help), and bitsandbytes then warns on every CPU run that an optional
  4-bit kernel package (`kernels`) is missing. Only QLoRA uses bitsandbytes, so outside QLoRA its warnings are
  dropped; full fine-tuning never imports peft (nor, therefore, bitsandbytes).
  The FutureWarning transformers raises when peft wraps, loads or saves a model (`is_gradient_checkpointing` is
  deprecated) is dropped too: it concerns peft's code, not the user's.
- `quiet_save()`: around `save_pretrained`, transformers' "Writing model shards" bar is off, and accelerate's
  unwrapping does not import DeepSpeed (which logs "Setting accelerator to CPU" on import) unless the run already
  uses it.
- `quiet_load()`: around `from_pretrained`, transformers' "Loading weights" bar only on a terminal (in a log file a
  tqdm bar is a line of carriage returns; loading a large model on a terminal is worth a bar).
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
def _hf_bars_off(off: bool = True) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if off and bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if off and bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_load() -> Iterator[None]:
    """transformers' loading bar only when stderr (where tqdm writes) is a terminal."""
    with _hf_bars_off(off=not sys.stderr.isatty()):
        yield


@contextlib.contextmanager
def quiet_save() -> Iterator[None]:
    """Silence what a checkpoint save prints that is not ours (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_hf_bars_off())
        if "deepspeed" not in sys.modules:
            # accelerate.utils.other.extract_model_from_parallel imports deepspeed to isinstance-check the model
            # against DeepSpeedEngine; a run that has not imported deepspeed holds no DeepSpeedEngine.
            with contextlib.suppress(ImportError, AttributeError):
                import accelerate.utils.other as accelerate_other

                stack.enter_context(_patched(accelerate_other, "is_deepspeed_available", lambda: False))
        yield


@contextlib.contextmanager
def _patched(module: ModuleType, name: str, value: object) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)
