"""Packed attention on torch's own kernels (model/native_attention.py): torch_varlen and flex_attention.

torch_varlen runs CUDA flash kernels only, so here: `varlen_boundaries` (a pure function, golden values), the
keyword arguments for the installed torch's `varlen_attn` and for the 2.10 signature, the clear error without CUDA,
`auto` per device (CUDA faked by monkeypatching), and the whole wrapper (flatten to tokens, GQA, cu_seqlens, back
to [B, L, H, D]) in every family with a CPU reference kernel of torch's exact signature in place of torch's CUDA
one: packed per-token losses and gradients equal the unpacked ones. benchmarks/gpu_check.py runs the real kernel.

flex_attention: the block mask's golden values, and packed == unpacked token losses on the CPU through
transformers' compiled flex attention (llama by default; every other family but gpt_bigcode behind `slow`, each
compile takes 10-60 s here). Gradients cannot be checked on the CPU: torch 2.13's flex attention has no CPU
backward, and a grad-enabled CPU forward is refused with the key named. gpt_bigcode has no flex attention in
transformers 5.24 and is refused at build.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mft_trainer.config import model as model_config
from mft_trainer.config.model import ModelConfig, PeftSettings
from mft_trainer.model import attention, build, forward, native_attention, unwrap
from trainer_testkit import (
    FAMILIES,
    pack,
    random_samples,
    stack,
    tiny_config,
    tiny_tokenizer,
    tiny_tokenizer_dir,
)


def build_tiny(family: str, attn: str = "sdpa", dtype: str = "fp32") -> torch.nn.Module:
    cfg = ModelConfig(init=FAMILIES[family], tokenizer=str(tiny_tokenizer_dir()), dtype=dtype,
                      attn_implementation=attn, moe_aux_loss_coef=0.02)
    torch.manual_seed(0)
    return build.build_model(cfg, PeftSettings(method="full"), vocab_size=len(tiny_tokenizer()), device="cpu")


def packed_and_unpacked(seed: int = 1) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[int]]:
    """Packed rows: three segments + padding, the same reversed, one full row. Unpacked: every sample of those
    rows alone in its own padded row, in the same order (so both hold the same tokens)."""
    s = random_samples(len(tiny_tokenizer()), (7, 5, 9, 24), seed=seed)
    packed = stack([pack(s[:3], 24), pack(s[:3][::-1], 24), pack([s[3]], 24)])
    unpacked = stack([pack([s[i]], 24) for i in (0, 1, 2, 2, 1, 0, 3)])
    return packed, unpacked, [len(x) for x in s]


def occurrences(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(packed row, start, length) of every sample occurrence of `packed_and_unpacked`, in unpacked-row order."""
    a, b, c, d = lengths
    return [(0, 0, a), (0, a, b), (0, a + b, c), (1, 0, c), (1, c, b), (1, c + b, a), (2, 0, d)]


def assert_packed_equals_unpacked(packed_loss: torch.Tensor, unpacked_loss: torch.Tensor, lengths: list[int],
                                  atol: float = 2e-5) -> float:
    worst = 0.0
    for row, (prow, start, n) in enumerate(occurrences(lengths)):
        got, want = packed_loss[prow, start:start + n], unpacked_loss[row, :n]
        torch.testing.assert_close(got, want, rtol=0, atol=atol)
        worst = max(worst, (got - want).abs().max().item())
    return worst


# ------------------------------------------------------------------------------------------------- varlen
def test_varlen_boundaries_golden() -> None:
    """The module docstring's drawing, plus a padding-only row and a row of one full segment."""
    cu, longest = native_attention.varlen_boundaries(torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 2, 2]]))
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 6, 10, 12] and longest == 4
    cu, longest = native_attention.varlen_boundaries(torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 2, 0]]))
    # row 2: segment 1, a padding run between segments (its own span), segment 2 with its trailing padding
    assert cu.tolist() == [0, 4, 8, 9, 10, 12] and longest == 4
    packed, _, lengths = packed_and_unpacked()
    cu, longest = native_attention.varlen_boundaries(packed["segment_ids"])
    a, b, c, _ = lengths
    assert cu.tolist() == [0, a, a + b, 24, 24 + c, 24 + c + b, 48, 72] and longest == 24


def reference_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                          window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None, num_splits=None):
    """torch 2.13's `varlen_attn` semantics on the CPU: attention within each [cu[i], cu[i+1]) of [T, H, D] tokens."""
    assert cu_seq_q.dtype == torch.int32 and torch.equal(cu_seq_q, cu_seq_k) and max_q == max_k
    bounds = cu_seq_q.tolist()
    assert bounds[0] == 0 and bounds[-1] == query.shape[0] and max(b - a for a, b in zip(bounds, bounds[1:], strict=False)) == max_q
    left, right = window_size
    assert right == 0, "the trainer asks for causal attention"
    outs = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        q, k, v = (t[start:end].transpose(0, 1)[None] for t in (query, key, value))  # [1, H, n, D]
        n = end - start
        allowed = torch.ones(n, n, dtype=torch.bool).tril()
        if left >= 0:
            allowed &= ~torch.ones(n, n, dtype=torch.bool).tril(-left - 1)
        outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale,
                                                   enable_gqa=enable_gqa)[0].transpose(0, 1))
    return torch.cat(outs)


def test_reference_kernel_has_torchs_signature() -> None:
    from torch.nn.attention.varlen import varlen_attn

    assert list(inspect.signature(reference_varlen_attn).parameters) == list(inspect.signature(varlen_attn).parameters)


def test_varlen_call_kwargs_follow_the_installed_signature() -> None:
    from torch.nn.attention.varlen import varlen_attn

    kwargs = native_attention.varlen_call_kwargs
    assert kwargs(varlen_attn, scale=0.5, gqa=True, sliding_window=None, max_seqlen=9) == {
        "scale": 0.5, "window_size": (-1, 0), "enable_gqa": True}
    assert kwargs(varlen_attn, scale=None, gqa=False, sliding_window=4, max_seqlen=9) == {
        "scale": None, "window_size": (3, 0)}
    assert kwargs(varlen_attn, scale=None, gqa=False, sliding_window=64, max_seqlen=9)["window_size"] == (-1, 0)

    def torch_2_10(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, return_aux=None,
                   scale=None):
        raise AssertionError("not called")

    assert kwargs(torch_2_10, scale=None, gqa=True, sliding_window=None, max_seqlen=9) == {
        "scale": None, "is_causal": True}  # no enable_gqa: the wrapper repeats the key/value heads itself
    with pytest.raises(ValueError, match="no window_size"):
        kwargs(torch_2_10, scale=None, gqa=False, sliding_window=4, max_seqlen=9)


def test_torch_varlen_without_cuda_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"model\.attn_implementation: torch_varlen cannot be used: no CUDA device"):
        ModelConfig(path="/m", attn_implementation="torch_varlen")
    with pytest.raises(ValueError, match=r"model\.attn_implementation: torch_varlen cannot run on cpu: .*CUDA only"):
        build.attention_choice("torch_varlen", "cpu")
    monkeypatch.setattr(model_config, "torch_varlen_available", lambda: (True, ""))
    with pytest.raises(ValueError, match=r"model\.dtype is fp32"):
        ModelConfig(path="/m", attn_implementation="torch_varlen", dtype="fp32")


def fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int] = (9, 0)) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


def test_auto_resolution_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    choose = build.resolve_attn_implementation
    monkeypatch.setattr(build, "flash_attn_available", lambda: (False, "the flash-attn package is not installed"))
    assert choose("auto", "cpu", torch.bfloat16) == "sdpa"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose("auto", "cuda", torch.bfloat16) == "sdpa"
    fake_gpu(monkeypatch)
    impl, why = build.attention_choice("auto", "cuda", torch.bfloat16)
    assert impl == "torch_varlen" and "flash-attn package is not installed" in why
    assert choose("auto", "cuda:1", torch.float16) == "torch_varlen"
    assert choose("auto", "cuda", torch.float32) == "sdpa"  # fp32 on purpose: the flash kernels cannot take it
    assert choose("auto", "cpu", torch.bfloat16) == "sdpa"
    assert choose("torch_varlen", "cuda", torch.bfloat16) == "torch_varlen"
    with pytest.raises(ValueError, match="bf16/fp16 only"):
        choose("torch_varlen", "cuda", torch.float32)
    fake_gpu(monkeypatch, capability=(7, 0))  # a V100: no flash kernels
    impl, why = build.attention_choice("auto", "cuda", torch.float16)
    assert impl == "sdpa" and "capability 7.x" in why
    monkeypatch.setattr(build, "flash_attn_available", lambda: (True, ""))
    assert choose("auto", "cuda", torch.bfloat16) == "flash_attention_2"
    assert choose("auto", "cpu", torch.bfloat16) == "sdpa"
    assert choose("flex_attention", "cpu", torch.float32) == "flex_attention"


def switch_to_varlen(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[int], int]]:
    """Put the CPU reference kernel in place of torch's CUDA one and the model on TORCH_VARLEN; records the calls."""
    calls: list[tuple[list[int], int]] = []

    @functools.wraps(reference_varlen_attn)  # so varlen_call_kwargs reads torch's signature from it
    def kernel(*args, **kwargs):
        calls.append((args[3].tolist(), args[5]))
        return reference_varlen_attn(*args, **kwargs)

    monkeypatch.setattr(native_attention, "varlen_kernel", lambda: kernel)
    native_attention.register_torch_varlen()
    unwrap.hf_model(model).set_attn_implementation(native_attention.TORCH_VARLEN)
    return calls


def losses_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor], attn: str) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    token_loss, aux = forward.token_losses(model, batch, attn)
    token_loss.sum().backward()  # the aux loss differs packed vs unpacked by design (a mean over the micro-batch)
    return token_loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_varlen_path_packed_equals_unpacked(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    packed, unpacked, lengths = packed_and_unpacked()
    model = build_tiny(family).eval()  # eval: no dropout, so both runs see identical computations
    attention.set_packed_attention(model, "mask")
    unpacked_loss, unpacked_grads = losses_and_grads(model, unpacked, "sdpa")
    calls = switch_to_varlen(model, monkeypatch)
    packed_loss, packed_grads = losses_and_grads(model, packed, "torch_varlen")
    layers = unwrap.hf_model(model).config.num_hidden_layers
    cu, longest = native_attention.varlen_boundaries(packed["segment_ids"])
    assert calls == [(cu.tolist(), longest)] * layers  # every layer ran the varlen kernel on the packed boundaries
    assert bool((packed_loss[packed["targets"] == -100] == 0).all())
    worst = assert_packed_equals_unpacked(packed_loss, unpacked_loss, lengths)
    assert packed_grads.keys() == unpacked_grads.keys()
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, unpacked_grads[name], rtol=1e-4, atol=1e-5, msg=name)
    print(f"{family}: torch_varlen (CPU reference kernel) packed vs unpacked max |token loss diff| {worst:.2e}")


def test_varlen_under_bf16_autocast_gives_the_kernel_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """RoPE turns q and k into fp32 under autocast; the flash kernels take bf16/fp16 only, so the wrapper casts."""
    packed, unpacked, lengths = packed_and_unpacked(seed=4)
    model = build_tiny("llama").eval()
    attention.set_packed_attention(model, "mask")
    with torch.no_grad():
        unpacked_loss, _ = forward.token_losses(model, unpacked, "sdpa", autocast_dtype=torch.bfloat16)
    dtypes: list[tuple[torch.dtype, ...]] = []

    @functools.wraps(reference_varlen_attn)
    def kernel(*args, **kwargs):
        dtypes.append(tuple(t.dtype for t in args[:3]))
        return reference_varlen_attn(*args, **kwargs)

    monkeypatch.setattr(native_attention, "varlen_kernel", lambda: kernel)
    native_attention.register_torch_varlen()
    unwrap.hf_model(model).set_attn_implementation(native_attention.TORCH_VARLEN)
    with torch.no_grad():
        packed_loss, _ = forward.token_losses(model, packed, "torch_varlen", autocast_dtype=torch.bfloat16)
    assert dtypes and all(d == (torch.bfloat16,) * 3 for d in dtypes)
    # bf16 rounding differs between the kernels; a leak between segments moves losses by ~0.5
    assert_packed_equals_unpacked(packed_loss, unpacked_loss, lengths, atol=5e-2)


def test_without_boundaries_varlen_is_transformers_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny("llama").eval()
    ids = torch.randint(3, len(tiny_tokenizer()), (2, 10), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, :3] = 0  # left padding, as in generation
    with torch.no_grad():
        attention.set_packed_attention(model, "mask")
        ref = model(input_ids=ids, attention_mask=attention_mask).logits
        calls = switch_to_varlen(model, monkeypatch)
        got = model(input_ids=ids, attention_mask=attention_mask).logits
    assert calls == []
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def test_a_forward_that_drops_the_boundaries_is_refused() -> None:
    model = build_tiny("llama")
    layer = unwrap.hf_model(model).model.layers[0].self_attn
    q, kv = torch.zeros(1, 4, 6, 8), torch.zeros(1, 2, 6, 8)
    native_attention._VARLEN_STATE.expected = True
    try:
        with pytest.raises(RuntimeError, match="did not pass mft_varlen_boundaries"):
            native_attention.torch_varlen_attention(layer, q, kv, kv, None)
    finally:
        native_attention._VARLEN_STATE.expected = False
    boundaries = (torch.tensor([0, 6], dtype=torch.int32), 6)
    with pytest.raises(ValueError, match="attention dropout"):
        native_attention.torch_varlen_attention(layer, q, kv, kv, None, dropout=0.1,
                                                mft_varlen_boundaries=boundaries)


# ------------------------------------------------------------------------------------------------- flex
def test_flex_block_mask_golden() -> None:
    from torch.nn.attention.flex_attention import create_mask

    seg = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 2, 2]])
    block_mask = native_attention.flex_block_mask(seg)
    assert tuple(block_mask.shape) == (2, 1, 6, 6)
    dense = create_mask(block_mask.mask_mod, 2, 1, 6, 6, device="cpu")[:, 0].int()
    assert dense[0].tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                                 [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
    assert dense[1].tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                                 [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1]]


def test_flex_training_forward_on_the_cpu_is_refused() -> None:
    model = build_tiny("llama", attn="flex_attention")
    assert unwrap.hf_model(model).config._attn_implementation == "flex_attention"
    assert unwrap.hf_model(model).mft_attention == {"requested": "flex_attention", "implementation": "flex_attention",
                                                    "device": "cpu", "reason": "requested"}
    packed, _, _ = packed_and_unpacked()
    with pytest.raises(ValueError, match=r"model\.attn_implementation: flex_attention cannot train on the CPU"):
        forward.token_losses(model, packed, "flex_attention")


def test_flex_for_a_model_type_without_it_is_refused_at_build() -> None:
    with pytest.raises(ValueError, match=r"model\.attn_implementation: flex_attention is not supported by model "
                                         r"type 'gpt_bigcode'"):
        build_tiny("starcoder", attn="flex_attention")


def flex_packed_equals_unpacked(family: str) -> None:
    packed, unpacked, lengths = packed_and_unpacked()
    reference = build_tiny(family).eval()
    attention.set_packed_attention(reference, "mask")
    model = build_tiny(family, attn="flex_attention").eval()
    for (name, p), (ref_name, ref_p) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert name == ref_name and torch.equal(p, ref_p), name  # same seed, same weights
    with torch.no_grad():
        packed_loss, _ = forward.token_losses(model, packed, "flex_attention")
        unpacked_loss, _ = forward.token_losses(reference, unpacked, "sdpa")
    assert bool((packed_loss[packed["targets"] == -100] == 0).all())
    worst = assert_packed_equals_unpacked(packed_loss, unpacked_loss, lengths)
    print(f"{family}: flex_attention (CPU, compiled) packed vs unpacked max |token loss diff| {worst:.2e}")


def test_flex_packed_equals_unpacked_llama() -> None:
    flex_packed_equals_unpacked("llama")


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("llama", "starcoder")])
def test_flex_packed_equals_unpacked_every_family(family: str) -> None:
    flex_packed_equals_unpacked(family)


# ------------------------------------------------------------------------------------------------- the record
def test_the_attention_choice_is_logged_first_and_recorded(tmp_path: Path, dataset: Path) -> None:
    from mft_trainer.loop import run_training
    from mft_trainer.metrics_log import read_metrics

    cfg = tiny_config(tmp_path, dataset, max_steps=2, model__attn_implementation="auto")
    final = run_training(cfg, progress=False)
    first = read_metrics(Path(cfg.output_dir) / "metrics.jsonl")[0]
    assert first["event"] == "started"
    assert first["attention"] == {"requested": "auto", "implementation": "sdpa", "device": "cpu",
                                  "reason": "auto: cpu device; segment-wise sdpa or the 4-D mask per micro-batch"}
    assert json.loads((final / "mft_train.json").read_text())["attention"] == first["attention"]
