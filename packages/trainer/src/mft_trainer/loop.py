"""The training recipe, top to bottom: setup -> train loop -> checkpoint -> clean-up.

One optimizer step (the unit of the schedule, of checkpoints and of resume):

    micro = stream.next_step()            grad_accum micro-batches for this rank; the GLOBAL rows of step s are
                                          fixed whatever the world size, so 1 and N processes see the same data
    step_loss.begin_step(micro)           global token/sample/task counts (all micro-batches, all ranks)
    for each micro-batch mb:
        token_loss = token_losses(model, mb)          [B, L] per-token cross-entropy
        loss = step_loss.micro_loss(token_loss, mb)   this rank's share of the GLOBAL step loss
        backend.backward(loss)                        x world_size, since every backend averages over ranks
    backend.step(clip_grad)               clip, AdamW, LR schedule: once per optimizer step on every backend

so the loss is normalised over the whole optimizer step (docs/reference.md §3), never per micro-batch or per rank.

The multi-task side (loss mode, self-paced/CoBa task weights, per-task validation, early stopping, plots and the
per-task summary) is one `loss.controller.BalancingController`; every rank calls it at the same steps (it all-reduces):

    fresh run: ctl.on_train_begin(0)            (CoBa's step-0 normalisers)   resume: ctl.load_state_dict(state)
    after each optimizer step: report = ctl.on_step_end(done, result)
        report.metrics -> progress bar, metrics.jsonl, TensorBoard; report.is_best -> output_dir/best/;
        report.should_stop -> early stop (final model written at that step)
    every checkpoint: meta.json balancer_state = ctl.state_dict()
    at the end: ctl.on_train_end(step, output_dir) -> final validation, PNGs, summary table, mft_train.json

Validation runs every `eval_every` optimizer steps and at the end, on the `valid` split minus the balancer slice when `loss.validation.slice` is
`separate`.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mft_trainer import checkpoint as ckpt
from mft_trainer.checkpoint import finite_or_none
from mft_trainer.config import TrainConfig
from mft_trainer.data import stream as data_mod
from mft_trainer.distributed import (
    Backend,
    DistEnv,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    wrap_model,
)
from mft_trainer.inputs import check_inputs, open_dataset
from mft_trainer.loss.controller import BalancingController
from mft_trainer.loss.step import StepLoss
from mft_trainer.metrics_log import MetricsLogger
from mft_trainer.model import build, forward, unwrap
from mft_trainer.progress import TrainProgress, stdout_console
from mft_trainer.run_dir import StartPlan, clear_earlier_run, plan_start

Batch = dict[str, torch.Tensor]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run_training(cfg: TrainConfig, progress: bool = True, stop_at_step: int | None = None, *,
                 overwrite: bool = False, allow_config_change: bool = False) -> Path:
    """Train as configured; return `output_dir/final`.

    stop_at_step: stop after that many optimizer steps with a checkpoint but no final model, as a preempted job
    would (resuming then continues the same trajectory); None trains to max_steps.
    overwrite / allow_config_change: see `run_dir.plan_start` (what an output_dir holding a run allows).
    """
    check_inputs(cfg)  # one-line errors before any process group, model or tokenizer
    plan = plan_start(cfg, overwrite=overwrite, allow_config_change=allow_config_change)
    env = init_distributed(cfg.distributed)
    try:
        final = _train(cfg, env, plan=plan, progress=progress, stop_at_step=stop_at_step)
    except BaseException:
        cleanup_distributed(env, failed=True)  # no barrier: other ranks may already be gone
        raise
    cleanup_distributed(env)
    return final


def _train(cfg: TrainConfig, env: DistEnv, *, plan: StartPlan, progress: bool, stop_at_step: int | None) -> Path:
    # ---- setup -------------------------------------------------------------------------------------------------
    output_dir = Path(cfg.output_dir)
    # Every rank planned from the same files before joining the process group (so before any rank changes them);
    # rank 0's decision is the one used.
    resume_from = broadcast_object(env, plan.resume_from)
    console = stdout_console()
    if env.is_main:
        if plan.clear:
            clear_earlier_run(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale_temps(output_dir)
        console.print(plan.message, markup=False, soft_wrap=True)
    barrier(env)

    dataset = open_dataset(cfg)
    tasks = list(dataset.tasks)
    cfg.loss.check_tasks(tasks)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    tokenizer = build.load_tokenizer(cfg.model)
    model = build.build_model(cfg.model, cfg.peft, vocab_size=len(tokenizer), device=env.device)
    # FSDP2 saves through an unsharded copy built on the CPU, where the CUDA-only kernels (flash_attention_2,
    # torch_varlen) cannot be built; the copy only holds the gathered weights, so its attention is sdpa.
    cpu_model_cfg = cfg.model.model_copy(update={"attn_implementation": "sdpa"})
    backend = wrap_model(model, cfg, env, rebuild=lambda: build.build_model(
        cpu_model_cfg, cfg.peft, vocab_size=len(tokenizer), device=torch.device("cpu")))
    attn = unwrap.hf_model(model).mft_attn_implementation  # what build_model resolved from `auto`
    if env.is_main:
        # Tokenization cache built once, by rank 0; the other ranks then load it (see data.tokenized_split).
        for split in ("train", "valid"):
            data_mod.tokenized_split(cfg.data, cfg.template, tokenizer, split, cfg.seq_length, cfg.mode)
    barrier(env)
    stream = data_mod.build_train_stream(
        cfg.data, cfg.template, tokenizer, seq_length=cfg.seq_length, packing=cfg.packing,
        micro_batch_size=cfg.micro_batch_size, grad_accum=cfg.grad_accum, rank=env.rank,
        world_size=env.world_size, seed=cfg.seed, mode=cfg.mode,
    )
    # This rank's validation micro-batches, built once and kept on the CPU (moved per forward); the controller
    # caches its small balancer slice on the device.
    valid_batches = data_mod.build_eval_batches(
        cfg.data, cfg.template, tokenizer, split="valid", seq_length=cfg.seq_length,
        micro_batch_size=cfg.micro_batch_size, packing=cfg.packing, rank=env.rank, world_size=env.world_size,
        mode=cfg.mode,
    )
    ctl = BalancingController(
        cfg.loss, tasks,
        token_losses=lambda b: forward.token_losses(backend.model, _to_device(b, env.device), attn)[0],
        valid_batches=valid_batches, model=backend.model, device=env.device, validate_every=cfg.eval_every,
    )
    step_loss = ctl.step_loss

    start_step = 0
    seed_everything(cfg.seed + 1000 * env.rank)  # dropout differs across ranks, reproducibly
    if resume_from is not None:
        start_step, balancer_state = ckpt.restore(Path(resume_from), backend, stream, env)
        if balancer_state:
            ctl.load_state_dict(balancer_state)
        elif ctl.balancer is not None:
            raise RuntimeError(f"resume: {resume_from} holds no balancer state, which loss.mode "
                               f"{ctl.mode!r} needs to continue; resume: never to start over")
    else:
        ctl.on_train_begin(0)  # no-op without a balancer; CoBa/self-paced: step-0 losses on the slice

    logger = MetricsLogger(output_dir, active=env.is_main, start_step=start_step, tensorboard=cfg.logging.tensorboard)
    bar = TrainProgress(total=cfg.max_steps, start_step=start_step, log_every=cfg.logging.log_every, live=progress,
                        active=env.is_main, console=console)
    local_numel, full_numel = backend.local_parameter_numel()
    logger.log(start_step, {
        "event": "resumed" if resume_from is not None else "started", "from": str(resume_from or ""),
        "attention": unwrap.hf_model(model).mft_attention,  # requested, implementation, device, reason
        "world_size": env.world_size, "backend": env.backend, "loss_mode": ctl.mode,
        "param_elements_this_rank": local_numel, "param_elements_full": full_numel,
        "optimizer_partition_elements_this_rank": backend.optimizer_partition_numel(),
        "trainable_elements": sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters() if p.requires_grad),
        "valid_micro_batches_this_rank": len(ctl.valid_batches),
        "balancer_slice_micro_batches_this_rank": len(ctl.slice.batches) if ctl.slice is not None else 0,
    })
    record_base = {"config": cfg.to_yaml_dict(), "dataset_manifest_hash": dataset.manifest_hash, "tasks": tasks,
                   "world_size": env.world_size, "loss_mode": ctl.mode, "attention": unwrap.hf_model(model).mft_attention}

    # ---- train loop ----------------------------------------------------------------------------------------------
    last_stop = cfg.max_steps if stop_at_step is None else min(stop_at_step, cfg.max_steps)
    backend.model.train()
    result = None
    stopped_early = False
    step = start_step
    for step in range(start_step, last_stop):
        started = time.perf_counter()
        micro = [_to_device(mb, env.device) for mb in stream.next_step()]
        lr = backend.current_lr()
        aux_mean = forward_backward(backend, step_loss, micro, attn, env.world_size)
        grad_norm = backend.step(cfg.clip_grad)
        result = step_loss.end_step()
        counts = _global_counts(micro, env)
        elapsed = time.perf_counter() - started
        done = step + 1
        report = ctl.on_step_end(done, result)  # balancer update, validation, early-stopping decision

        metrics: dict[str, Any] = {
            "loss": result.loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": counts["tokens"],
            "supervised_tokens": result.tokens,
            "pad_fraction": counts["pad"] / max(counts["slots"], 1),
            "tokens_per_s": counts["tokens"] / elapsed,
            "step_time_s": elapsed,
            **_clean(report.metrics),
        }
        if aux_mean is not None:
            metrics["aux_loss"] = aux_mean
        if done % cfg.logging.log_every == 0 or done == last_stop or report.validated or report.should_stop:
            logger.log(done, metrics)
        bar.update(done, loss=result.loss, lr=lr, tokens_per_s=metrics["tokens_per_s"],
                   tasks=_train_detail(tasks, report.metrics, ctl.weights_act),
                   valid=_valid_detail(tasks, report.metrics) if report.validated else "",
                   force=done == last_stop or report.should_stop)

        if report.is_best:
            ckpt.save_best(backend, tokenizer, cfg, env, report, record_base)
        if report.should_stop:
            stopped_early = True
            step = done
            if env.is_main:
                logger.log(done, {"event": "early_stop", "best_step": ctl.early_stopping.best_step,
                                  "patience": ctl.early_stopping.patience})
                bar.note(f"early stop at step {done}: no better validation for {ctl.early_stopping.patience} "
                         f"validations (best step {ctl.early_stopping.best_step})")
            break

        # ---- checkpoint ------------------------------------------------------------------------------------------
        if (cfg.save_every and done % cfg.save_every == 0) or (done == last_stop and done < cfg.max_steps):
            ckpt.save_checkpoint(cfg, backend, stream, tokenizer, env, done, ctl.state_dict())
        step = done

    # ---- final model and clean-up ----------------------------------------------------------------------------------
    final_dir = output_dir / ckpt.FINAL
    if last_stop == cfg.max_steps or stopped_early:
        end = ctl.on_train_end(step, output_dir if env.is_main else None)  # final validation if not done at `step`
        if end.validated:
            logger.log(step, _clean(end.metrics))
            bar.close()
            bar.note(f"valid step {step}/{cfg.max_steps} | {_valid_detail(tasks, end.metrics)}")
            if end.is_best:
                ckpt.save_best(backend, tokenizer, cfg, env, end, record_base)
        valid = {t: finite_or_none(v) for t, v in zip(tasks, _last_valid(ctl), strict=True)}
        rows = ctl.summary_rows()
        record = {
            **record_base,
            "step": step,
            "stopped_early": stopped_early,
            "valid_loss_per_task": valid,
            "valid_metric": {"name": cfg.loss.early_stopping.metric,
                             "best_value": finite_or_none(ctl.early_stopping.best_value),
                             "best_step": ctl.early_stopping.best_step},
            "task_summary": {r["task"]: {k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in r.items()
                                         if k != "task"} for r in rows},
            "balancer_seconds": ctl.slice.seconds if ctl.slice is not None else 0.0,
            "validation_seconds": ctl.validation_seconds,
            "last_train_loss": result.loss if result is not None else None,
            "data_stats": stream.stats.as_dict(),
        }
        ckpt.save_final(backend, tokenizer, cfg, env, final_dir, record)
        if env.is_main:
            logger.close()
            bar.close()
            console.print(ctl.summary_table())
    bar.close()
    logger.close()
    barrier(env)
    return final_dir


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    """The controller's flat metrics with NaN (a task absent from a step, no best yet) as null for strict JSON."""
    return {k: finite_or_none(v) for k, v in metrics.items()}


def _last_valid(ctl: BalancingController) -> list[float]:
    """Per-task validation loss of the controller's latest validation (NaN when none ran)."""
    if not ctl.valid_records:
        return [float("nan")] * len(ctl.task_names)
    named = ctl.valid_records[-1]["valid"]
    return [float(named[t]) for t in ctl.task_names]


def _train_detail(tasks: list[str], m: dict[str, float], weights_act: bool = True) -> str:
    """Per task: the step's train loss and its weight (``w``), or its share of the loss (``s``) where no weights act."""
    key, letter = ("weight", "w") if weights_act else ("share", "s")
    parts = []
    for t in tasks:
        loss = m.get(f"train_loss/{t}")
        parts.append(f"{t} {'-' if loss is None else f'{loss:.3f}'} {letter}{m.get(f'{key}/{t}', float('nan')):.2f}")
    return " | ".join(parts)


def _valid_detail(tasks: list[str], m: dict[str, float]) -> str:
    return " | ".join(f"{t} {m.get(f'valid_loss/{t}', float('nan')):.3f}" for t in tasks)


def forward_backward(
    backend: Backend, step_loss: StepLoss, micro: list[Batch], attn: str, world_size: int
) -> float | None:
    """Forward and backward over the micro-batches of one optimizer step; gradients are left in the parameters.

    Returns the mean MoE router loss over the step's forwards (None for dense models).
    """
    step_loss.begin_step(micro)
    if step_loss.needs_probe:
        with torch.no_grad():
            for mb in micro:
                step_loss.probe(forward.token_losses(backend.model, mb, attn)[0], mb)
        step_loss.finish_probe()
    aux_values: list[float] = []
    for i, mb in enumerate(micro):
        with backend.micro_step(is_last=i == len(micro) - 1):
            token_loss, aux = forward.token_losses(backend.model, mb, attn)
            loss = step_loss.micro_loss(token_loss, mb)
            if aux is not None:
                # The router loss is a per-forward mean: average it over all forwards of the global step.
                loss = loss + aux / (len(micro) * world_size)
                aux_values.append(float(aux.detach()))
            backend.backward(loss)
    return sum(aux_values) / len(aux_values) if aux_values else None


def _global_counts(micro: list[Batch], env: DistEnv) -> dict[str, int]:
    """Non-pad tokens and row slots of this optimizer step over all ranks (for tokens/s and the pad fraction)."""
    local = torch.tensor(
        [sum(int((mb["segment_ids"] > 0).sum()) for mb in micro), sum(mb["segment_ids"].numel() for mb in micro)],
        dtype=torch.int64,
    )
    if env.initialized:
        torch.distributed.all_reduce(local)
    tokens, slots = local.tolist()
    return {"tokens": tokens, "slots": slots, "pad": slots - tokens}
