"""Process-group set-up and the three data-parallel backends (DDP, FSDP2, DeepSpeed ZeRO-2/3), torch-native.

Multi-process runs are launched by `torchrun` (one node or many); on CPU every backend runs over gloo, which is how
the tests check them with 2 processes. accelerate's FSDP/DeepSpeed plugins are NOT used: on CPU they silently run
unsharded (docs/reference.md §7). Each backend exposes the same small surface to the loop:

    backend.model                       the module to call forward on
    with backend.micro_step(is_last):   gradient sync only on the last micro-batch of an optimizer step
        backend.backward(loss)          loss = this rank's share of the GLOBAL step loss (StepLoss.micro_loss);
                                        the backend averages gradients over ranks, so it is multiplied by world_size
    backend.step(clip_grad) -> norm     clip, optimizer step, scheduler step: once per optimizer step
    backend.state_dicts() / load_state_dicts(...)   full (gathered) trainable weights + optimizer + scheduler
    with backend.gathered_model() as m: full weights on rank 0 for save_pretrained
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mft_trainer.config import DistributedConfig, TrainConfig
from mft_trainer.optim import make_optimizer, scheduler_for


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits. world_size 1 without a process group for backend `none`."""

    backend: str
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def is_distributed(group: dist.ProcessGroup | None = None) -> bool:
    """True inside a process group of more than one rank (the only case where collectives do anything)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(cfg: DistributedConfig) -> DistEnv:
    """Join the torchrun process group (or make a 1-process one for a backend that needs a group)."""
    launched = "WORLD_SIZE" in os.environ and "RANK" in os.environ
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.backend == "none":
        if launched and world_size > 1:
            raise RuntimeError(
                f"launched with WORLD_SIZE={world_size} but distributed.backend is 'none'; "
                "set distributed.backend=ddp, fsdp2 or deepspeed"
            )
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        return DistEnv("none", 0, 1, 0, device)
    if not launched:
        # A backend run without torchrun: a world of one, so the same code path is exercised.
        os.environ.update(
            {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(_free_port())}
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, pg_backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, pg_backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        if cfg.backend == "deepspeed":
            import deepspeed

            deepspeed.init_distributed(pg_backend)
        else:
            dist.init_process_group(pg_backend)
    return DistEnv(cfg.backend, dist.get_rank(), dist.get_world_size(), local_rank, device)


def cleanup_distributed(env: DistEnv, failed: bool = False) -> None:
    """Leave the process group (after a barrier, unless this rank failed and the others may never arrive)."""
    if env.initialized:
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.initialized:
        dist.barrier()


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    """Rank 0's value on every rank."""
    if not env.initialized:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks, found through transformers' `_no_split_modules` (the family's decoder-layer class).

    Works through PEFT wrappers, since it walks all sub-modules; every HF causal-LM class declares this attribute.
    """
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise RuntimeError(
            f"FSDP2: found no decoder layers in {type(model).__name__} (no module class named in _no_split_modules)"
        )
    return layers


class TorchBackend:
    """`none` (one process), `ddp` (DistributedDataParallel) and `fsdp2` (fully_shard per decoder layer, then root).

    All three keep a torch AdamW and a LambdaLR stepped once per optimizer step; checkpoints go through
    torch.distributed.checkpoint.state_dict, which gathers full tensors keyed by parameter name whatever the
    wrapping, so a checkpoint written by one backend resumes on another.
    """

    def __init__(
        self, model: nn.Module, cfg: TrainConfig, env: DistEnv, rebuild: Callable[[], nn.Module] | None = None
    ) -> None:
        self.env = env
        self.kind = env.backend
        self.base = model
        self.rebuild = rebuild
        if self.kind == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [env.local_rank] if env.device.type == "cuda" else None
            self.model: nn.Module = DistributedDataParallel(model, device_ids=ids)
        elif self.kind == "fsdp2":
            from torch.distributed.fsdp import fully_shard

            for layer in decoder_layers(model):
                fully_shard(layer)
            fully_shard(model)
            self.model = model
        else:
            self.model = model
        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = scheduler_for(self.optimizer, cfg)

    @contextlib.contextmanager
    def micro_step(self, is_last: bool) -> Iterator[None]:
        if self.kind == "ddp" and not is_last:
            with self.model.no_sync():  # type: ignore[operator]
                yield
        elif self.kind == "fsdp2":
            self.model.set_requires_gradient_sync(is_last)  # type: ignore[operator]
            yield
        else:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        # DDP and FSDP2 AVERAGE gradients over ranks; StepLoss gives each rank its share of the global SUM.
        (loss * self.env.world_size).backward()

    def step(self, clip_grad: float | None) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad is not None else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return float(norm)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        # Saving gathers full tensors on rank 0 (cpu_offload); loading gives every rank the full state and each
        # keeps its shard (broadcast_from_rank0 hung with DDP over gloo in torch 2.13).
        return StateDictOptions(
            full_state_dict=True, cpu_offload=self.kind in ("ddp", "fsdp2"), ignore_frozen_params=True, strict=False
        )

    def state_dicts(self) -> dict[str, Any]:
        """Full trainable weights, optimizer (keyed by parameter name) and scheduler; complete on rank 0."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer, options=self._options())
        return {"model": model_sd, "optimizer": optim_sd, "scheduler": self.scheduler.state_dict()}

    def load_state_dicts(self, states: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(
            self.model, self.optimizer, model_state_dict=states["model"], optim_state_dict=states["optimizer"],
            options=self._options(),
        )
        self.scheduler.load_state_dict(states["scheduler"])

    def save_native(self, directory: Path) -> None:
        """Nothing beyond state_dicts() for torch backends."""

    def load_native(self, directory: Path) -> None:
        """Nothing beyond load_state_dicts() for torch backends."""

    @contextlib.contextmanager
    def gathered_model(self) -> Iterator[nn.Module | None]:
        """The unwrapped model with full weights on rank 0 (None elsewhere), for save_pretrained."""
        if self.kind != "fsdp2":
            yield self.base if self.env.is_main else None
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.env.is_main:
            yield None
            return
        if self.rebuild is None:
            raise RuntimeError("FSDP2 save needs a rebuild() that makes an unsharded copy of the model")
        # An unsharded twin on CPU loaded with the gathered weights: save_pretrained then sees plain tensors.
        twin = self.rebuild()
        twin.load_state_dict(full, strict=True)
        yield twin

    def optimizer_partition_numel(self) -> int | None:
        """Not tracked for torch backends (FSDP2 optimizer state follows the sharded parameters)."""
        return None

    def local_parameter_numel(self) -> tuple[int, int]:
        """(elements held by this rank, elements of the full model): evidence that FSDP2 really shards."""
        local = full = 0
        for p in self.model.parameters():
            full += p.numel()
            local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
        return local, full


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The shipped (or given) JSON with the batch sizes, clipping and dtype filled in from the TrainConfig."""
    dcfg = cfg.distributed
    if dcfg.deepspeed_config is not None:
        path = dcfg.deepspeed_config
        text = Path(path).read_text(encoding="utf-8")
    else:
        name = f"zero{dcfg.zero_stage}.json"
        text = resources.files("mft_trainer").joinpath("configs", "deepspeed", name).read_text(encoding="utf-8")
        path = Path(name)
    try:
        ds = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"distributed.deepspeed_config {path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    ds["train_micro_batch_size_per_gpu"] = cfg.micro_batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["train_batch_size"] = cfg.micro_batch_size * cfg.grad_accum * world_size
    ds["gradient_clipping"] = cfg.clip_grad if cfg.clip_grad is not None else 0.0
    # A user's JSON keeps its own stage; the shipped files are named by distributed.zero_stage.
    ds.setdefault("zero_optimization", {}).setdefault("stage", dcfg.zero_stage)
    # Our AdamW is a client optimizer; DeepSpeed asks for this flag before it wraps an optimizer it did not test.
    ds["zero_allow_untested_optimizer"] = True
    return ds


class DeepSpeedBackend:
    """DeepSpeed ZeRO-2/3 with its engine called directly (deepspeed.initialize), fp32 or bf16 as configured."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, env: DistEnv) -> None:
        import deepspeed

        self.env = env
        self.cfg = cfg
        self.base = model
        self.ds_config = deepspeed_config(cfg, env.world_size)
        optimizer = make_optimizer(model, cfg)
        engine, ds_optimizer, _, scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=lambda opt: scheduler_for(opt, cfg),
            config=self.ds_config,
        )
        self.engine = engine
        self.model = engine
        self.optimizer = ds_optimizer
        self.scheduler = scheduler

    @contextlib.contextmanager
    def micro_step(self, is_last: bool) -> Iterator[None]:
        yield
        # The engine counts micro-steps itself; it steps the optimizer (and our scheduler) on the last one.
        self.engine.step()

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed averages over data-parallel ranks; scale_wrt_gas=False because StepLoss already normalised over
        # the whole optimizer step.
        self.engine.backward(loss * self.env.world_size, scale_wrt_gas=False)

    def step(self, clip_grad: float | None) -> float:
        # Clipping and the optimizer/scheduler step already ran inside engine.step() on the boundary micro-batch.
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def current_lr(self) -> float:
        return float(self.engine.get_lr()[0])

    def state_dicts(self) -> dict[str, Any]:
        """DeepSpeed keeps weights, optimizer and scheduler in its own (sharded) checkpoint: see save_native."""
        return {}

    def load_state_dicts(self, states: dict[str, Any]) -> None:
        """See load_native."""

    def save_native(self, directory: Path) -> None:
        # Collective: every rank writes its ZeRO partition.
        self.engine.save_checkpoint(str(directory), tag="deepspeed", save_latest=False)

    def load_native(self, directory: Path) -> None:
        path, _ = self.engine.load_checkpoint(
            str(directory), tag="deepspeed", load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if path is None:
            raise RuntimeError(f"{directory}: no DeepSpeed checkpoint under tag 'deepspeed'")

    @contextlib.contextmanager
    def gathered_model(self) -> Iterator[nn.Module | None]:
        import deepspeed

        if self.ds_config["zero_optimization"]["stage"] == 3:
            params = list(self.engine.module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                yield self.engine.module if self.env.is_main else None
        else:
            yield self.engine.module if self.env.is_main else None

    def optimizer_partition_numel(self) -> int | None:
        """fp32 master elements this rank's ZeRO optimizer holds (about 1/world of the trainable ones)."""
        opt = self.engine.optimizer
        groups = getattr(opt, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
        if groups is None:
            groups = getattr(opt, "fp32_partitioned_groups_flat", None)  # ZeRO-3
        return None if groups is None else int(sum(g.numel() for g in groups))

    def local_parameter_numel(self) -> tuple[int, int]:
        local = full = 0
        for p in self.engine.module.parameters():
            full += int(getattr(p, "ds_numel", p.numel()))
            local += int(p.ds_tensor.numel()) if hasattr(p, "ds_tensor") else p.numel()
        return local, full


Backend = TorchBackend | DeepSpeedBackend


def wrap_model(
    model: nn.Module, cfg: TrainConfig, env: DistEnv, rebuild: Callable[[], nn.Module] | None = None
) -> Backend:
    """Wrap the model for the configured backend and create AdamW + the LR schedule.

    rebuild: makes a fresh unsharded copy of the model (FSDP2 saves through it).
    """
    if env.backend == "deepspeed":
        return DeepSpeedBackend(model, cfg, env)
    return TorchBackend(model, cfg, env, rebuild)
