"""Generation backends: Hugging Face (CPU or GPU; full checkpoints and PEFT adapters) and vLLM (GPU, lazy import).

The HF backend runs its own decoding loop over a KV cache rather than ``model.generate``, so that a sequence that
hit EOS or a stop string leaves the batch at once (its cache rows are dropped with ``batch_select_indices``) and
stops costing compute; ``generate`` keeps finished rows in the batch until the longest one ends. Batches are
left-padded with position ids from the attention mask, so batched greedy output equals one-by-one output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mft_eval.extract import truncate_at_stops


@dataclass(frozen=True)
class DecodingConfig:
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Generation:
    text: str  # raw generated text, cut at the first stop sequence (the stop itself excluded)
    raw_text: str  # everything generated, EOS excluded
    num_tokens: int
    stopped_by: str  # "eos", "stop:<seq>" or "length"
    token_ids: tuple[int, ...] = ()


class BackendMissingError(RuntimeError):
    """An optional backend was asked for but its package is not installed."""


_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _torch_dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    if name not in _DTYPES:
        raise ValueError(f"dtype {name!r}: expected auto, float32, bfloat16 or float16")
    return getattr(torch, _DTYPES[name])


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: Path) -> str:
    config_path = Path(path) / "adapter_config.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    base = data.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config_path}: key 'base_model_name_or_path' is missing; cannot find the base model")
    # mft-train names a base it built from a config (no hub id) by a path relative to the adapter folder
    # ("base_model"), so the checkpoint stays valid when moved; PEFT itself would read it against the cwd.
    beside = Path(path) / str(base)
    if not Path(str(base)).is_absolute() and beside.is_dir():
        return str(beside)
    return str(base)


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint directory itself, or the ``final/`` of an mft-train run directory (Contract 2)."""
    path = Path(path)
    markers = ("config.json", "adapter_config.json")
    if any((path / m).is_file() for m in markers):
        return path
    final = path / "final"
    if any((final / m).is_file() for m in markers):
        return final
    raise FileNotFoundError(
        f"{path}: no config.json or adapter_config.json here or in {final} (expected a HF checkpoint, a PEFT "
        "adapter, or an mft-train run directory)"
    )


WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _has_any(folder: Path, names: Sequence[str]) -> bool:
    return any((folder / name).is_file() for name in names)


def check_checkpoint(path: Path, need_tokenizer: bool = True) -> Path:
    """The checkpoint to load (`resolve_checkpoint`), after checking that it holds what loading needs: weights and
    a tokenizer, here or, for an adapter, in its local base model. Errors name the folder and what is missing, so
    `mft run --dry-run` and `mft-eval run` fail before loading anything (rather than on a missing sentencepiece)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {path}: not found (expected a HF checkpoint, a PEFT adapter or an mft-train "
                                "run directory)")
    if not path.is_dir():
        raise FileNotFoundError(f"model {path}: not a directory (expected a HF checkpoint or adapter folder)")
    path = resolve_checkpoint(path)
    if is_adapter(path):
        if not _has_any(path, ADAPTER_WEIGHTS):
            raise FileNotFoundError(f"model {path}: adapter_config.json but no {' or '.join(ADAPTER_WEIGHTS)}")
        base = Path(adapter_base(path))
        if base.is_dir():
            check_checkpoint(base, need_tokenizer=not _has_any(path, TOKENIZER_FILES))
        elif base.is_absolute() or str(base).startswith(("./", "../")):  # a local path, not a hub id
            raise FileNotFoundError(f"model {path}: its base model {base} (adapter_config.json) is not a folder")
        return path
    if not _has_any(path, WEIGHTS) and not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"model {path}: config.json but no weights ({', '.join(WEIGHTS)})")
    if need_tokenizer and not _has_any(path, TOKENIZER_FILES):
        raise FileNotFoundError(f"model {path}: no tokenizer ({', '.join(TOKENIZER_FILES)})")
    return path


def resolve_device(device: str) -> str:
    """`auto`: cuda when torch sees a GPU, else cpu; any other value as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    path = Path(path)
    source: str | Path = path
    if is_adapter(path) and not any((path / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        source = adapter_base(path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Loading prints nothing of other libraries' that tells the user nothing: peft imports bitsandbytes whenever it
    is installed, which then warns on every CPU run that an optional 4-bit kernel package is missing (evaluation
    never quantizes, so its warnings are dropped); transformers' "Loading weights" bar is off (mft-eval shows its
    own progress); the FutureWarning transformers raises from inside peft (`is_gradient_checkpointing`) concerns
    peft's code, not the user's."""
    from transformers.utils import logging as hf_logging

    bnb = logging.getLogger("bitsandbytes")
    level = bnb.level
    bars = hf_logging.is_progress_bar_enabled()
    bnb.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated",
                                    category=FutureWarning)
            yield
    finally:
        bnb.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_model(path: Path, dtype: str = "auto", device: str = "cpu"):
    """A causal LM from a full checkpoint directory or a PEFT adapter whose base is named in adapter_config.json."""
    with quiet_loading():
        from transformers import AutoModelForCausalLM

        path = Path(path)
        if is_adapter(path):
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(adapter_base(path), dtype=_torch_dtype(dtype))
            model = PeftModel.from_pretrained(base, str(path))
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_torch_dtype(dtype))
        return model.to(device).eval()


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(int(i) for i in config_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _cache_keyword(model: Any) -> str:
    """transformers 5 renames ``past_key_values`` to ``cache`` (the old name warns); use what forward takes."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


class HFGenerator:
    """Batched decoding with per-sequence stopping. ``generate`` keeps the order of its prompts."""

    def __init__(self, model: Any, tokenizer: Any, stops: Sequence[str], add_special_tokens: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"  # decoding continues every row from its last column
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.cache_kw = _cache_keyword(model)
        self.stops = [s for s in stops if s]
        self.eos = eos_token_ids(model, tokenizer)
        self.add_special_tokens = add_special_tokens

    def _check_stop(self, text: str) -> str | None:
        for stop in self.stops:
            if stop in text:
                return stop
        return None

    def generate_batch(self, prompts: Sequence[str], decoding: DecodingConfig, generator: Any) -> list[Generation]:
        import torch
        from transformers import DynamicCache
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=self.add_special_tokens)
        device = next(self.model.parameters()).device
        input_ids = enc["input_ids"].to(device)
        attention = enc["attention_mask"].to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        warpers = []
        if not decoding.greedy:
            warpers.append(TemperatureLogitsWarper(decoding.temperature))
            if decoding.top_p < 1.0:
                warpers.append(TopPLogitsWarper(decoding.top_p))
        batch = len(prompts)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        stopped: list[str] = ["length"] * batch
        active = list(range(batch))
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids, attention_mask=attention, position_ids=positions,
                use_cache=True, **{self.cache_kw: cache},
            )
            for _ in range(decoding.max_new_tokens):
                logits = out.logits[:, -1, :].float()
                if decoding.greedy:
                    next_tokens = logits.argmax(dim=-1)
                else:
                    scores = logits
                    for warper in warpers:
                        scores = warper(None, scores)
                    probs = torch.softmax(scores, dim=-1)
                    next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                keep: list[int] = []
                for row, seq in enumerate(active):
                    token = int(next_tokens[row])
                    if token in self.eos:
                        stopped[seq] = "eos"
                        continue
                    tokens[seq].append(token)
                    hit = self._check_stop(tok.decode(tokens[seq], skip_special_tokens=False)) if self.stops else None
                    if hit is not None:
                        stopped[seq] = f"stop:{hit}"
                        continue
                    keep.append(row)
                if not keep or len(tokens[active[keep[0]]]) >= decoding.max_new_tokens:
                    break
                if len(keep) < len(active):
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    attention = attention[index]
                    next_tokens = next_tokens[index]
                    active = [active[r] for r in keep]
                attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=1)
                step_positions = attention.sum(-1, keepdim=True) - 1
                out = self.model(
                    input_ids=next_tokens[:, None], attention_mask=attention, position_ids=step_positions,
                    use_cache=True, **{self.cache_kw: cache},
                )
        results = []
        for seq in range(batch):
            raw = tok.decode(tokens[seq], skip_special_tokens=True)
            results.append(
                Generation(truncate_at_stops(raw, self.stops), raw, len(tokens[seq]), stopped[seq], tuple(tokens[seq]))
            )
        return results

    def generate(
        self,
        prompts: Sequence[str],
        decoding: DecodingConfig,
        batch_size: int,
        on_batch: Callable[[list[int], list[Generation]], None] | None = None,
    ) -> list[Generation]:
        """Generate for every prompt; prompts are batched by token length to waste little padding."""
        import torch

        generator = torch.Generator(device="cpu").manual_seed(decoding.seed)
        torch.manual_seed(decoding.seed)
        lengths = [len(self.tokenizer(p, add_special_tokens=self.add_special_tokens)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (-lengths[i], i))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            outs = self.generate_batch([prompts[i] for i in chunk], decoding, generator)
            for i, g in zip(chunk, outs, strict=True):
                results[i] = g
            if on_batch is not None:
                on_batch(chunk, outs)
        return [r for r in results if r is not None]


def vllm_generate(
    model_path: Path,
    prompts: Sequence[str],
    stops: Sequence[str],
    decoding: DecodingConfig,
    dtype: str,
    tensor_parallel_size: int = 1,
) -> list[Generation]:
    """Generate with vLLM (GPU). Imported only here, so the package works without it."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise BackendMissingError(
            "backend 'vllm' needs the vllm package, which is not installed: "
            "pip install 'mft-evaluation[vllm]' on a machine with a GPU, or use --backend hf"
        ) from exc
    model_path = Path(model_path)
    lora = None
    model_name = str(model_path)
    if is_adapter(model_path):
        from vllm.lora.request import LoRARequest

        model_name = adapter_base(model_path)
        lora = LoRARequest("adapter", 1, str(model_path))
    llm = LLM(
        model=model_name, tokenizer=model_name if lora else str(model_path), dtype=dtype,
        seed=decoding.seed, tensor_parallel_size=tensor_parallel_size, enable_lora=lora is not None,
    )
    params = SamplingParams(
        n=1, temperature=max(decoding.temperature, 0.0), top_p=decoding.top_p,
        max_tokens=decoding.max_new_tokens, stop=list(stops) or None, seed=decoding.seed,
    )
    outputs = llm.generate(list(prompts), params, lora_request=lora)
    results = []
    for out in outputs:
        completion = out.outputs[0]
        reason = completion.finish_reason
        stopped_by = "length" if reason == "length" else (f"stop:{completion.stop_reason}" if isinstance(completion.stop_reason, str) else "eos")
        results.append(Generation(completion.text, completion.text, len(completion.token_ids), stopped_by))
    return results
