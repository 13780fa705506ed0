"""The multi-task side of the training loop in one object: loss, balancer, validation, early stopping, plots.

The loop owns the model, the optimizer and the step protocol; it hands the per-step loss statistics to a
:class:`BalancingController` and gets back metrics to log and two decisions (new best, stop). How ``loop.py``
uses it::

    ctl = BalancingController(cfg.loss, dataset.tasks, token_losses=fwd, valid_batches=valid, model=model)
    step_loss = ctl.step_loss                      # the StepLoss of the configured mode
    if resumed: ctl.load_state_dict(state["balance"])
    else:       ctl.on_train_begin(step=0)         # step-0 losses on the balancer slice (CoBa normalisers)
    for step in range(start_step + 1, max_steps + 1):
        ... begin_step / probe / micro_loss + backward / optimizer step ...
        report = ctl.on_step_end(step, step_loss.end_step())
        log(report.metrics); if report.is_best: save best; if report.should_stop: break
        checkpoint: state["balance"] = ctl.state_dict()
    ctl.on_train_end(step, output_dir)             # final validation if due, PNGs, summary table
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.table import Table

from mft_trainer.config.loss import LossConfig
from mft_trainer.loss.balancers import CoBaBalancer, FamoBalancer, SelfPacedBalancer
from mft_trainer.loss.early_stopping import EarlyStopping
from mft_trainer.loss.modes import TASK_MODES
from mft_trainer.loss.step import StepLoss, StepLossResult
from mft_trainer.loss.validation import (
    BalancerSlice,
    Batch,
    TokenLossFn,
    ValidationResult,
    evaluate_per_task,
    split_validation,
)
from mft_trainer.plots import plot_task_curves, plot_training_curves

# Per-step records kept for the plots (and checkpoints): above this many, every second one is dropped, so a long
# run's curve keeps its shape at bounded size.
MAX_TRAIN_RECORDS = 20_000


@dataclass
class StepReport:
    """What one optimizer step produced for the loop: flat metrics (JSONL/TensorBoard/progress) and decisions."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    validated: bool = False
    is_best: bool = False
    should_stop: bool = False
    weights_updated: bool = False


class BalancingController:
    """Owns the StepLoss, the balancer (self-paced, CoBa or FAMO), validation and early stopping of one run.

    Every rank builds one with its own share of the validation micro-batches and calls every method at the same
    steps (validation and balancer updates all-reduce). All state needed for an exact resume is in
    :meth:`state_dict`.
    """

    def __init__(
        self,
        cfg: LossConfig,
        task_names: Sequence[str],
        *,
        token_losses: TokenLossFn,
        valid_batches: Sequence[Batch],
        model: torch.nn.Module | None = None,
        process_group: dist.ProcessGroup | None = None,
        device: torch.device | None = None,
        validate_every: int = 0,
    ) -> None:
        self.cfg = cfg
        # Steps between validations: TrainConfig.eval_every (0 = only at the end of training).
        self.validate_every = int(validate_every)
        self.task_names = list(task_names)
        cfg.check_tasks(self.task_names)
        self.num_tasks = K = len(self.task_names)
        self.mode = cfg.resolved_mode(K)
        self.token_losses = token_losses
        self.model = model
        self.process_group = process_group
        self.device = device
        self.static_weights = cfg.task_weight_vector(self.task_names)
        self.step_loss = StepLoss(
            cfg.combine_mode(K),
            K,
            task_weights=self.static_weights,
            alpha=cfg.alpha_vector(self.task_names),
            gamma=cfg.gamma,
            process_group=process_group,
        )
        self.balancer: SelfPacedBalancer | CoBaBalancer | FamoBalancer | None = None
        self.update_every = 1
        if self.mode == "coba":
            c = cfg.coba
            self.balancer = CoBaBalancer(K, warmup=c.warmup, history=c.history, tau=c.tau)
            self.update_every = c.update_every
        elif self.mode == "self_paced":
            s = cfg.self_paced
            self.balancer = SelfPacedBalancer(K, history=s.history, scale=s.scale)
            self.update_every = s.update_every
        elif self.mode == "famo":
            f = cfg.famo
            self.balancer = FamoBalancer(K, lr=f.lr, weight_decay=f.weight_decay)
            self.update_every = f.update_every
        self.slice: BalancerSlice | None = None
        self.valid_batches = list(valid_batches)
        if self.balancer is not None:
            slice_batches, self.valid_batches = split_validation(
                valid_batches, K, slice_mode=cfg.validation.slice, samples_per_task=cfg.validation.slice_size
            )
            self.slice = BalancerSlice(
                slice_batches,
                K,
                valid_batches=cfg.coba.valid_batches if self.mode == "coba" else None,
                device=device,
            )
        es = cfg.early_stopping
        self.early_stopping = EarlyStopping(es.patience, es.min_delta)
        self.tokens_seen = torch.zeros(K, dtype=torch.long)
        # One record per validation (and the step-0 weights): bounded by the number of validations.
        self.valid_records: list[dict[str, Any]] = []
        self.weight_records: list[dict[str, Any]] = []
        # One record per optimizer step: per-task train loss and the weights in force (bounded, MAX_TRAIN_RECORDS).
        self.train_records: list[dict[str, Any]] = []
        self.validation_seconds = 0.0

    # ---- weights -------------------------------------------------------------------------------------------------
    @property
    def task_weights(self) -> torch.Tensor:
        """Weights in force, normalised to sum 1 over all tasks (static x balancer)."""
        w = torch.ones(self.num_tasks, dtype=torch.float64)
        if self.static_weights is not None:
            w = w * self.static_weights
        if self.balancer is not None:
            w = w * self.balancer.weights
        return w / w.sum() if w.sum() > 0 else w

    @property
    def weights_act(self) -> bool:
        """Whether task weights enter the loss (the task modes); in `token` and `sample` mode they do not."""
        return self.step_loss.mode in TASK_MODES

    def _apply_weights(self) -> None:
        if self.step_loss.mode in TASK_MODES:
            self.step_loss.set_task_weights(self.task_weights)

    def _named(self, values: torch.Tensor) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.task_names, values.tolist(), strict=True)}

    # ---- hooks ---------------------------------------------------------------------------------------------------
    def evaluate_slice(self) -> ValidationResult:
        """Per-task losses on the balancer slice (the balancers' input); timed in ``slice.seconds``."""
        if self.slice is None:
            raise RuntimeError(f"loss mode {self.mode!r} has no balancer slice")
        return self.slice.evaluate(self.token_losses, model=self.model, process_group=self.process_group)

    def on_train_begin(self, step: int = 0) -> None:
        """Before the first optimizer step of a fresh run: the balancer's step-0 point (CoBa's normalisers)."""
        if self.balancer is not None:
            result = self.evaluate_slice()
            self.balancer.update(step, result.per_task_loss)
            self._apply_weights()
            self.weight_records.append({"step": step, "weights": self._named(self.task_weights)})

    def validate(self, step: int) -> ValidationResult:
        """Per-task loss over this run's whole early-stopping validation set (all ranks)."""
        result = evaluate_per_task(
            self.token_losses,
            self.valid_batches,
            self.num_tasks,
            model=self.model,
            process_group=self.process_group,
            device=self.device,
        )
        self.validation_seconds += result.seconds
        self.valid_records.append(
            {"step": step, "loss": result.loss, "valid": self._named(result.per_task_loss)}
        )
        return result

    def on_step_end(self, step: int, result: StepLossResult) -> StepReport:
        """After optimizer step ``step`` (1-based count of completed steps): update weights, validate, decide."""
        report = StepReport(step=step)
        self.tokens_seen += result.per_task_tokens
        m = report.metrics
        m["loss"] = result.loss
        for name, value in self._named(result.per_task_loss).items():
            if not math.isnan(value):
                m[f"train_loss/{name}"] = value
        for name, w in self._named(self.task_weights).items():
            m[f"weight/{name}"] = w
        # The share of the step's loss each task carried: the applied weights in the task modes, each task's
        # token (sample) share in `token` (`sample`) mode, where the task weights above do not act.
        for name, share in self._named(result.task_weights).items():
            m[f"share/{name}"] = share
        self.train_records.append({
            "step": step,
            "train": {n: m[f"train_loss/{n}"] for n in self.task_names if f"train_loss/{n}" in m},
            "weights": {n: m[f"weight/{n}"] for n in self.task_names},
            "share": {n: m[f"share/{n}"] for n in self.task_names},
        })
        if len(self.train_records) > MAX_TRAIN_RECORDS:
            self.train_records = self.train_records[::2]

        if self.balancer is not None and step % self.update_every == 0:
            slice_result = self.evaluate_slice()
            self.balancer.update(step, slice_result.per_task_loss)
            self._apply_weights()
            report.weights_updated = True
            for name, value in self._named(slice_result.per_task_loss).items():
                m[f"slice_loss/{name}"] = value
        if self.slice is not None:
            m["balancer_seconds"] = self.slice.seconds

        if self.validate_every and step % self.validate_every == 0:
            self._validate_and_decide(step, report)
        return report

    def _validate_and_decide(self, step: int, report: StepReport) -> None:
        result = self.validate(step)
        value = result.metric(self.cfg.early_stopping.metric, self.task_names)
        report.validated = True
        self.weight_records.append({"step": step, "weights": self._named(self.task_weights)})
        report.is_best = self.early_stopping.update(step, value)
        report.should_stop = self.early_stopping.should_stop
        m = report.metrics
        m["valid_loss"] = result.loss
        m["valid_metric"] = value
        m["best_step"] = (
            float(self.early_stopping.best_step) if self.early_stopping.best_step is not None else math.nan
        )
        for name, v in self._named(result.per_task_loss).items():
            m[f"valid_loss/{name}"] = v

    def on_train_end(self, step: int, output_dir: Path | None = None) -> StepReport:
        """Validate at the last step if not done yet; write the PNGs (rank 0 passes ``output_dir``)."""
        report = StepReport(step=step)
        if not self.valid_records or self.valid_records[-1]["step"] != step:
            self._validate_and_decide(step, report)
        if output_dir is not None:
            self.write_plots(Path(output_dir))
        return report

    # ---- outputs -------------------------------------------------------------------------------------------------
    def write_plots(self, output_dir: Path) -> list[Path]:
        paths = []
        if self.valid_records:
            paths.append(
                plot_task_curves(
                    self.valid_records,
                    self.task_names,
                    "valid",
                    output_dir / "valid_loss_per_task.png",
                    title="Validation loss per task",
                    ylabel="token-mean cross-entropy",
                )
            )
        if self.train_records:
            paths.append(
                plot_training_curves(
                    self.train_records,
                    self.valid_records,
                    self.task_names,
                    output_dir / "training_curves.png",
                    title=f"Per task, loss mode {self.mode}",
                    weights_act=self.weights_act,
                )
            )
        if self.weights_act:  # every step when there are steps
            records, key, window = self.train_records or self.weight_records, "weights", 1
            title, ylabel = f"Task weights ({self.mode})", "weight"
        else:
            records, key, window = self.train_records, "share", max(1, len(self.train_records) // 40)
            title = f"Each task's share of the loss ({self.mode} mode: no task weights act)"
            ylabel = "share of the step's loss"
        if records:
            paths.append(
                plot_task_curves(records, self.task_names, key, output_dir / "task_weights.png", title=title,
                                 ylabel=ylabel, smooth_window=window)
            )
        return paths

    def summary_rows(self) -> list[dict[str, Any]]:
        """Per task: tokens seen in training, final and best validation loss, and the step of the best."""
        rows = []
        for k, name in enumerate(self.task_names):
            curve = [
                (r["step"], r["valid"][name]) for r in self.valid_records if not math.isnan(r["valid"][name])
            ]
            best = min(curve, key=lambda sv: sv[1]) if curve else (None, math.nan)
            rows.append(
                {
                    "task": name,
                    "tokens_seen": int(self.tokens_seen[k]),
                    "final_valid_loss": curve[-1][1] if curve else math.nan,
                    "best_valid_loss": best[1],
                    "best_step": best[0],
                    "final_weight": float(self.task_weights[k]),
                }
            )
        return rows

    def summary_table(self) -> Table:
        table = Table(title=f"Per-task summary (loss mode {self.mode})")
        for col in (
            "task",
            "tokens seen",
            "final valid loss",
            "best valid loss",
            "best step",
            "final weight",
        ):
            table.add_column(col, justify="left" if col == "task" else "right")
        for r in self.summary_rows():
            table.add_row(
                r["task"],
                f"{r['tokens_seen']:,}",
                f"{r['final_valid_loss']:.4f}",
                f"{r['best_valid_loss']:.4f}",
                str(r["best_step"]),
                f"{r['final_weight']:.3f}",
            )
        return table

    # ---- resume --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "task_names": list(self.task_names),
            "balancer": self.balancer.state_dict() if self.balancer is not None else None,
            "slice": self.slice.state_dict() if self.slice is not None else None,
            "early_stopping": self.early_stopping.state_dict(),
            "tokens_seen": self.tokens_seen.tolist(),
            "valid_records": self.valid_records,
            "weight_records": self.weight_records,
            "train_records": self.train_records,
            "validation_seconds": self.validation_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["mode"] != self.mode or state["task_names"] != self.task_names:
            raise ValueError(
                f"balance state is for mode {state['mode']!r} and tasks {state['task_names']}, "
                f"this run has {self.mode!r} and {self.task_names}"
            )
        if self.balancer is not None:
            self.balancer.load_state_dict(state["balancer"])
        if self.slice is not None:
            self.slice.load_state_dict(state["slice"])
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.tokens_seen = torch.tensor(state["tokens_seen"], dtype=torch.long)
        self.valid_records = list(state["valid_records"])
        self.weight_records = list(state["weight_records"])
        self.train_records = list(state.get("train_records", []))  # absent in checkpoints before the records
        self.validation_seconds = float(state["validation_seconds"])
        self._apply_weights()
