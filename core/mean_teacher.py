"""SSLL: the Mean-Teacher trainer with CutMix and the PICo loss (spec ssll.md §2-§5).

One run has two phases. Before ``ssll.semi_start_epoch`` it trains the student on paired data
exactly like the supervised baseline (the EMA teacher is maintained all along). From that epoch
on, every iteration also mixes paired low-light content into an unpaired batch with CutMix and
adds, on the unpaired region M_u, the unpaired terms scaled by the ramp w(e):

    L = L_sup(y_p, g) + lambda_p PICo(y_p; g, teacher(x_p))
        + w(e) sum_k weight_k loss_k(y_c, teacher(x_c), x_c, M_u)

with y = clamp(student(x), 0, 1) and w(e) = semi_weight * exp(-5 (1 - min(e, R)/R)^2). The
unpaired terms are declared in ``ssll.unpaired_losses``, each a registered loss called as
``loss(student_out, teacher_out, input, mask)``; the paper's recipe (the default) is
``consistency`` (masked L1 to the teacher, weight 1) and ``pico_unpaired`` (PICo with the
teacher as positive and the brightness-adjusted input BA(x_c) as negative, weight lambda_u).
The paired region of the mixed image gets no loss (as in the released configs); it only gives
context.

A semi-supervised run can also start from a supervised run's checkpoint: ``--resume`` it (the
epoch count, schedule and EMA continue, as the official recipe does) or set ``pretrained.path``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from core import TRAINERS
from core.supervised import SupervisedTrainer, weighted_image_losses
from data.cutmix import boxes_to_mask, curriculum_mean, cutmix, cutmix_rng, sample_boxes
from foundation.errors import UserError
from losses import build_loss


def sigmoid_ramp(epoch: int, length: int, weight: float = 1.0) -> float:
    """w(e) = weight * exp(-5 (1 - min(e, R)/R)^2) (Laine & Aila's sigmoid-shaped ramp-up)."""
    if length <= 0:
        return weight
    phase = 1.0 - min(epoch, length) / length
    return weight * math.exp(-5.0 * phase * phase)


@TRAINERS.register("mean_teacher")
class MeanTeacherTrainer(SupervisedTrainer):
    """Student trained by gradients; teacher = EMA of the student (base trainer); see module docstring."""

    def __init__(self, cfg, resume: str | None = None) -> None:
        if cfg.train.ema_decay is None:
            raise UserError("the mean_teacher trainer needs train.ema_decay (the teacher is the student's EMA)")
        super().__init__(cfg, resume)

    def build_losses(self) -> dict[str, torch.nn.Module]:
        losses = super().build_losses()
        if self.cfg.ssll.official_lpips_range and "lpips" in losses:
            # reproduce the official training loss, whose LPIPS sees [0, 1] images
            spec = next(sp for sp in self.cfg.losses if sp.name == "lpips")
            losses["lpips"] = build_loss("lpips", **{**spec.args.to_dict(), "official_range_bug": True}).to(self.device)
        s = self.cfg.ssll
        self.pico_p = build_loss("pico", gamma=s.gamma_p, margin=s.margin_p)
        if s.semi_start_epoch is not None and not s.unpaired_losses:
            raise UserError("ssll.unpaired_losses is empty: the semi-supervised phase needs at least one unpaired "
                            "term (e.g. consistency, pico_unpaired)")
        self.unpaired_terms = {spec.name: (float(spec.weight), build_loss(spec.name, **spec.args.to_dict()))
                               for spec in s.unpaired_losses}
        return losses

    def build_data(self) -> None:
        super().build_data()
        s, d = self.cfg.ssll, self.cfg.data
        self.semi_start_iter = None
        if s.semi_start_epoch is not None:
            if not d.unpaired.type:
                raise UserError("ssll.semi_start_epoch is set but data.unpaired names no dataset")
            extra = {"extra_files": self.withheld_inputs} if self.withheld_inputs and d.unlabelled_to_pool else {}
            self.unpaired_set = self._dataset(d.unpaired, **extra)
            self.check_stream_size("unpaired", self.unpaired_set)
            self.log.info(f"unpaired pool: {len(self.unpaired_set)} images"
                          + (f" ({len(self.withheld_inputs)} of them inputs of withheld pairs)" if extra else ""))
            self.semi_start_iter = (s.semi_start_epoch - 1) * self.iters_per_epoch
        total_epochs = math.ceil(self.total_iters / self.iters_per_epoch)
        self.curriculum_epochs = s.curriculum_epochs or self.cfg.scheduler.period_epochs or total_epochs
        if self.semi_start_iter is not None and self.semi_start_iter >= self.total_iters:
            self.log.warning(f"this run ends at iteration {self.total_iters}, before its semi-supervised phase starts "
                             f"(ssll.semi_start_epoch={s.semi_start_epoch} = iteration {self.semi_start_iter + 1} at "
                             f"{self.iters_per_epoch} iterations per epoch): it trains on the paired data only; "
                             f"raise train.iters/train.epochs or lower ssll.semi_start_epoch")

    def start_streams(self) -> None:
        super().start_streams()
        self.unpaired_stream = None
        if self.semi_start_iter is not None and self.iter < self.total_iters:
            # the unpaired stream counts semi-phase iterations only
            consumed = max(0, self.iter - self.semi_start_iter)
            self.unpaired_stream = self.make_stream(self.unpaired_set, self.batch_size("unpaired"),
                                                    start_iter=consumed, seed_offset=7919)

    def in_semi_phase(self) -> bool:
        return self.semi_start_iter is not None and self.iter >= self.semi_start_iter

    def next_batches(self) -> dict[str, Any]:
        batch = next(self.paired_stream)
        if self.in_semi_phase():
            batch = {**batch, "unpaired": next(self.unpaired_stream)}
        return batch

    # ------------------------------------------------------------------ the step
    @property
    def fused_student_forward(self) -> bool:
        """One student pass over [x_p; x_c] (``ssll.fused_student_forward``; ``auto`` = on CUDA only).

        Same maths as two passes. On an H100 the fused pass was faster for every backbone; on the
        CPU the doubled batch costs more in memory traffic than it saves (BENCHMARKS.md, 5b;
        docs/official_comparison.md), so ``auto`` runs two passes there.
        """
        value = self.cfg.ssll.fused_student_forward
        return self.device.type == "cuda" if value == "auto" else bool(value)

    def mix(self, x_p: torch.Tensor, x_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CutMix the paired batch into the unpaired one; return (x_c, M_p)."""
        s = self.cfg.ssll
        n = min(x_p.shape[0], x_u.shape[0])
        x_p, x_u = x_p[:n], x_u[:n]
        mean = curriculum_mean(self.epoch, s.semi_start_epoch, self.curriculum_epochs)
        rng = cutmix_rng(self.cfg.seed, self.iter, self.dist.rank, unseeded=s.official_unseeded_cutmix)
        boxes = sample_boxes(n, x_u.shape[2], x_u.shape[3], mean, rng, s.cutmix_sigma, s.cutmix_min, s.cutmix_max)
        mask = boxes_to_mask(boxes, tuple(x_u.shape), x_u.device, x_u.dtype)
        return cutmix(x_p, x_u, mask), mask

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "unpaired" not in batch:
            return super().train_step(batch)
        s = self.cfg.ssll
        student, teacher = self.wrapped["student"], self.teachers["teacher"]
        x_p, g = self.to_input(batch["lq"]), batch["gt"]
        x_c, m_p = self.mix(x_p, batch["unpaired"]["lq"])
        x_c = self.to_input(x_c)
        m_u = 1 - m_p
        n_p = x_p.shape[0]
        with torch.no_grad():
            t_out = teacher(torch.cat([x_p, x_c])).clamp(0, 1).float()
        t_p, t_c = t_out[:n_p], t_out[n_p:]
        w = sigmoid_ramp(self.epoch, s.ramp_epochs, s.semi_weight)
        fused = self.fused_student_forward
        if fused:
            y = self.clamp_output(student(torch.cat([x_p, x_c]))).float()
            y_p, y_c = y[:n_p], y[n_p:]
        else:
            y_p = self.clamp_output(student(x_p)).float()
        terms = weighted_image_losses(self.losses, self.loss_weights, y_p, g)
        terms["pico_paired"] = s.lambda_p * self.pico_p(y_p, g, t_p)
        if not fused:  # two backward passes, as the official code does
            self.backward(sum(terms.values()))
            y_c = self.clamp_output(student(x_c)).float()
        x_in = x_c.float()
        mixed = {name: w * weight * loss(y_c, t_c, x_in, m_u) for name, (weight, loss) in self.unpaired_terms.items()}
        if fused:
            self.backward(sum(terms.values()) + sum(mixed.values()))
        else:
            self.backward(sum(mixed.values()))
        return {**terms, **mixed}
