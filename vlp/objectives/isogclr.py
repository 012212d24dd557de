"""`isogclr`: per-sample learned temperatures (Qiu et al., ICML 2023, "Not All Semantics are Created Equal:
Contrastive Self-supervised Learning with Automatic Temperature Individualization"; distributed in FastCLIP,
Wei et al. 2024).  Following the authors' code (Optimization-AI, `SogCLR_DRO_Loss`, the iSogCLR README's settings).

Every dataset sample keeps, for its image anchor and its text anchor: u (moving average of the inner expectation,
stored as log u), τ, and m (moving average of ∂F/∂τ).  The state is O(n), keyed by `sample_ids`, sharded by id
across ranks (id i on rank i mod W, column i div W). It is a training-state component (`SampleState`, which the
objective hands the trainer from `components`): checkpoints hold it whole, in id order, so a resume on any world size
reads the same values, and a step the trainer skipped as non-finite leaves it as it was (`after_step`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
import torch.distributed as dist

from vlp.objectives.anchors import required
from vlp.objectives.base import Objective
from vlp.objectives.distributed import gather_with_grad, world
from vlp.objectives.registry import register
from vlp.objectives.row_lse import PairMask, row_lse
from vlp.recipe.errors import ConfigError

if TYPE_CHECKING:
    from vlp.data.batch import Batch

FIELDS = ("image_log_u", "image_tau", "image_tau_grad", "text_log_u", "text_tau", "text_tau_grad")


@register("isogclr")
class ISogCLRLoss(Objective):
    """F = Σ_{anchors} (1/n) Σ_i [τ_i log E_{z∈S_i⁻} exp(h_i(z)/τ_i) + τ_i ρ], h_i(z) = s(i, z) − s(i, i⁺), over
    image anchors (z: the other texts) plus text anchors (z: the other images).  Per step, with the batch's τ:
    u_i ← (1−γ)u_i + γ·mean_z exp(h_i(z)/τ_i); the model gradient is mean_z exp(h_i(z)/τ_i)/u_i · ∇h_i(z);
    ∂F/∂τ_i ≈ log u_i + ρ − mean_z[exp(h/τ_i)/u_i · h/τ_i], m_i ← (1−β)m_i + β·clip(∂F/∂τ_i, ±5),
    τ_i ← clamp(τ_i − η·m_i, τ_min, τ_max).  The reported loss is the estimate Σ mean_i τ_i(log u_i + ρ)."""

    tiled_form = True
    gather_modes = ("global",)
    reads = ("sample_ids",)

    def __init__(self, gamma: float = 0.8, rho: float = 0.1, tau_init: float = 0.07, tau_min: float = 0.005,
                 tau_max: float = 1.0, eta: float = 0.03, beta: float = 0.9, grad_clip: float = 5.0, **execution):
        super().__init__(**execution)
        for key, value, low, high in (("gamma", gamma, 0, 1), ("beta", beta, 0, 1)):
            if not low < value <= high:
                raise ValueError(f"{key} must be in (0, 1], got {value}")
        if not 0 < tau_min <= tau_init <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau_init <= tau_max, got {tau_min}, {tau_init}, {tau_max}")
        for key, value in (("rho", rho), ("eta", eta), ("grad_clip", grad_clip)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number >= 0, got {value}")
        self.gamma, self.rho, self.beta, self.eta, self.grad_clip = gamma, rho, beta, eta, grad_clip
        self.tau_init, self.tau_range = tau_init, (tau_min, tau_max)
        self.samples: Optional[SampleState] = None  # built by `components`, once the data's sample ids are known

    def components(self, data, device: torch.device) -> dict[str, SampleState]:
        num_sample_ids = getattr(data, "num_sample_ids", None)
        if num_sample_ids is None:
            raise ValueError("objective 'isogclr' keeps state per sample and needs stable sample ids: the training "
                             "data must know its shard sizes (sizes.json) so that it can number its samples")
        self.samples = SampleState(num_sample_ids, self.tau_init, device)
        return {"objective": self.samples}

    def check_global_batch(self, global_batch: int) -> None:
        """∂F/∂τ_i = log u_i + ρ − E_q[h/τ_i] = ρ − KL(q_i ‖ uniform), q_i ∝ exp(h_i/τ_i) over the B−1 negatives, and
        that KL is at most log(B−1): from ρ = log(B−1) on, every τ only falls, to tau_min.  B is the global batch
        because the negatives are gathered (gather: global), whatever the number of processes or micro-batches."""
        bound = math.log(global_batch - 1)
        if self.rho >= bound:
            raise ConfigError("objective.params.rho", f"{self.rho:g} is at or above log(B−1) = {bound:.2f} for the "
                              f"global batch B = {global_batch}, so every per-sample τ would fall to tau_min; set rho "
                              f"below {bound:.2f} (default 0.1) or train.batch_size above e^rho + 1 = "
                              f"{math.exp(self.rho) + 1:.0f}")

    # ---- the objective ----

    def compute(self, x, y, t, b=None, samples: Optional[Batch] = None, **inputs):
        sample_ids = None if samples is None else samples.sample_ids
        ids = gather_with_grad(required(sample_ids, "sample ids", "isogclr", "data with known shard sizes"))
        all_x, all_y = gather_with_grad(x), gather_with_grad(y)
        if all_x.shape[0] < 2:
            raise ValueError("isogclr needs at least 2 samples in the global batch")
        if self.samples is None:
            raise ValueError("objective 'isogclr' has no per-sample state yet: build it with components(data, device)")
        state = self.samples.fetch(ids)
        loss, estimate, new_state = 0, 0, []
        # image anchors against the texts, text anchors against the images: h = s(anchor, z) − s(anchor, its pair)
        for anchors, columns, (log_u, tau, tau_grad) in ((all_x, all_y, state[0:3]), (all_y, all_x, state[3:6])):
            side_loss, side_estimate, updated = self._anchor_side(anchors, columns, log_u, tau.to(x.dtype), tau_grad)
            loss, estimate = loss + side_loss, estimate + side_estimate
            new_state.extend(updated)
        with torch.no_grad():
            self.samples.store(ids, torch.stack(new_state))
        loss = loss - loss.detach() + estimate  # gradient of the paper's update, value of its objective
        return {"loss": loss, "contrastive_loss": loss, "image_tau_mean": state[1].mean().to(x.dtype),
                "text_tau_mean": state[4].mean().to(x.dtype), "logit_scale": t}

    def _anchor_side(self, a, c, log_u, tau, tau_grad):
        """One anchor modality, rows of `a` against the columns `c` other than their own pair: (surrogate loss,
        objective estimate, updated (log u, τ, m)).  Everything comes from the per-row LSE_i = log Σ_{z≠i}
        exp(s_iz/τ_i) (by tiles when tiled) and its derivative in the row scale, E_p[s_iz]."""
        batch, inverse = a.shape[0], (1 / tau).detach().requires_grad_()
        positive = (a * c).sum(1)  # s_ii
        with torch.enable_grad():  # E_p[s] = ∂LSE_i/∂(1/τ_i), whatever the caller's grad mode
            lse = row_lse(a, c, inverse, PairMask(drop_positive=True), self.tile_size if self.tiled else None)
            expected, = torch.autograd.grad(lse.sum(), inverse, retain_graph=True)
        with torch.no_grad():
            log_g = lse - positive * inverse - math.log(batch - 1)  # log mean_z exp(h_i(z)/τ_i)
            log_u = torch.logaddexp(math.log(1 - self.gamma) + log_u.to(a.dtype), math.log(self.gamma) + log_g) \
                if self.gamma < 1 else log_g
            ratio = (log_g - log_u).exp()  # g_i/u_i: mean_z[exp(h/τ)/u · f(z)] = g/u · E_p[f]
            grad = log_u + self.rho - ratio * (expected - positive) * inverse
            tau_grad = (1 - self.beta) * tau_grad.to(a.dtype) + self.beta * grad.clamp(-self.grad_clip,
                                                                                        self.grad_clip)
            new_tau = (tau - self.eta * tau_grad).clamp(*self.tau_range)
            estimate = (tau * (log_u + self.rho)).mean()
        # gradient g/u · (E_p[∇s_iz] − ∇s_ii) = mean_z exp(h/τ)/u · ∇h, since ∇(τ·LSE_i) = E_p[∇s_iz]
        surrogate = (ratio * (tau * lse - positive)).mean()
        return surrogate, estimate, (log_u, new_tau, tau_grad)


class SampleState:
    """(u, τ, m) of both anchors for every sample id: this rank's ids as the columns of one table, whole in the
    checkpoint. A training-state component (vlp.train.components): `state_dict` is a collective."""

    def __init__(self, num_sample_ids: int, tau_init: float, device: torch.device):
        rank, size = world()
        self.num_samples = num_sample_ids
        initial = torch.tensor([-math.inf, tau_init, 0.0] * 2, dtype=torch.float64)
        # one spare column last: the other ranks' ids are written there, so storing needs no boolean index (a sync)
        self.table = initial[:, None].repeat(1, len(range(rank, num_sample_ids, size)) + 1).to(device)
        self._undo: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # the last step's columns and their old state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The whole state in sample-id order (collective: every rank calls it)."""
        rank, size = world()
        mine = self.table[:, :-1]
        if size == 1:
            full = mine
        else:
            width = -(-self.num_samples // size)
            padded = torch.nn.functional.pad(mine, (0, width - mine.shape[1]))
            parts = [torch.empty_like(padded) for _ in range(size)]
            dist.all_gather(parts, padded)
            full = torch.empty(len(FIELDS), self.num_samples, dtype=self.table.dtype, device=self.table.device)
            for r, part in enumerate(parts):
                full[:, r::size] = part[:, :len(range(r, self.num_samples, size))]
        return {name: full[i].detach().cpu().clone() for i, name in enumerate(FIELDS)}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(FIELDS) - set(tensors))
        if missing or tensors[FIELDS[0]].shape[0] != self.num_samples:
            raise ValueError(f"checkpoint's isogclr state does not fit this data ({self.num_samples} samples): "
                             f"missing {missing}" if missing else
                             f"it has {tensors[FIELDS[0]].shape[0]} samples, the data {self.num_samples}")
        rank, size = world()
        full = torch.stack([tensors[name].to(self.table) for name in FIELDS])
        self.table = torch.cat([full[:, rank::size], self.table[:, -1:]], 1)

    def after_step(self, applied: torch.Tensor) -> None:
        """Undo the last step's state update if the trainer skipped the step (on the device: no host sync)."""
        if self._undo is not None:
            columns, before = self._undo
            self.table[:, columns] = torch.where(applied, self.table[:, columns], before)
            self._undo = None

    def fetch(self, ids: torch.Tensor) -> torch.Tensor:
        """(fields, B) state of the global batch's ids, from the ranks that own them."""
        rank, size = world()
        mine = ids % size == rank
        fetched = torch.where(mine, self.table[:, self._columns(ids)], 0.0)
        if size > 1:
            dist.all_reduce(fetched)  # exactly one rank contributes each column
        return fetched

    def store(self, ids: torch.Tensor, values: torch.Tensor) -> None:
        columns = self._columns(ids)
        self._undo = (columns, self.table[:, columns].clone())  # until the trainer says whether the step was applied
        self.table[:, columns] = values.to(self.table.dtype)

    def _columns(self, ids: torch.Tensor) -> torch.Tensor:
        """Columns of this rank's table for `ids`: its own ids' columns, the spare last column for the others."""
        rank, size = world()
        return torch.where(ids % size == rank, ids // size, self.table.shape[1] - 1)
