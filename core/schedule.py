"""Flow-matching schedule of the InSpatio-World sampler: shifted sigmas, warped timesteps, x0, re-noise.

Place in the data flow: :mod:`core.world` asks this module for the timesteps of the four denoising
steps, converts each flow prediction to a clean estimate x0 and re-noises x0 to the next step.

Follows ``utils/scheduler.py`` (``FlowMatchScheduler(shift=5, sigma_min=0, extra_one_step=True)
.set_timesteps(1000, training=True)``, ``add_noise``) and ``utils/wan_wrapper.py``
(``_convert_flow_pred_to_x0``) of the official v1 code, and the "warp" of
``pipeline/causal_inference.py``. Every value is computed with the official dtypes, so the warped
timesteps are the float32 numbers the released model saw (833.3333129882812, not 833.3̅).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .types import FlowPrediction, VideoLatents

RELEASED_DENOISING_STEPS = (1000, 750, 500, 250)
RELEASED_SHIFT = 5.0
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class FlowMatchSchedule:
    """The shifted flow-matching table and the warped denoising timesteps.

    ``denoising_steps`` are the configured steps in the un-shifted 0..1000 scale; warping maps step
    ``s`` to the table's timestep at index ``1000 − s`` (0 maps past the end, to t = 0).
    """

    denoising_steps: tuple[int, ...] = RELEASED_DENOISING_STEPS
    shift: float = RELEASED_SHIFT
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS

    def __post_init__(self) -> None:
        if not self.denoising_steps:
            raise ValueError("the schedule needs at least one denoising step")
        out_of_range = [s for s in self.denoising_steps if not 0 < s <= self.num_train_timesteps]
        if out_of_range:
            raise ValueError(
                f"denoising steps {out_of_range} are outside 1..{self.num_train_timesteps}: "
                "use values like the release's (1000, 750, 500, 250)"
            )
        if self.shift <= 0:
            raise ValueError(f"timestep shift must be positive, got {self.shift}")

    @cached_property
    def sigmas(self) -> Tensor:
        """float32 ``[num_train_timesteps]`` shifted sigmas, from 1 down (the last one is not 0)."""
        # linspace(1, 0, n + 1)[:-1] is the official extra_one_step table; the shift formula is
        # evaluated in float32 in the same operation order, because the warped timesteps are read
        # back from this table and must round like the official ones.
        unshifted = torch.linspace(1.0, 0.0, self.num_train_timesteps + 1, dtype=torch.float32)[:-1]
        return self.shift * unshifted / (1 + (self.shift - 1) * unshifted)

    @cached_property
    def timesteps(self) -> Tensor:
        """float32 ``[num_train_timesteps]``: ``sigmas · num_train_timesteps``."""
        return self.sigmas * self.num_train_timesteps

    @cached_property
    def warped_timesteps(self) -> Tensor:
        """float32 ``[steps]``: the timestep fed to the model at each denoising step."""
        with_zero = torch.cat([self.timesteps, torch.zeros(1, dtype=torch.float32)])
        indices = self.num_train_timesteps - torch.tensor(self.denoising_steps, dtype=torch.long)
        return with_zero[indices]

    def sigma_at(self, timestep: Tensor) -> Tensor:
        """float32 sigma of the table entry nearest to each timestep (argmin, as the official lookup)."""
        table = self.timesteps.to(timestep.device)
        index = torch.argmin(
            (table.unsqueeze(0) - timestep.reshape(-1, 1).to(table.dtype)).abs(), dim=1
        )
        return self.sigmas.to(timestep.device)[index].reshape(timestep.shape)

    def x0_from_flow(
        self, noisy: VideoLatents, flow: FlowPrediction, timestep: Tensor
    ) -> VideoLatents:
        """``x0 = x_t − σ_t·flow`` in float64, cast back to the prediction's dtype.

        ``timestep`` is a 0-dim tensor: one timestep per call, as the model uses.
        """
        sigma = self.sigma_at(timestep).to(torch.float64)
        return (noisy.to(torch.float64) - sigma * flow.to(torch.float64)).to(flow.dtype)

    def add_noise(self, clean: VideoLatents, noise: VideoLatents, timestep: Tensor) -> VideoLatents:
        """``(1 − σ)·x0 + σ·ε`` with a float32 sigma, returned in the noise's dtype (official ``add_noise``)."""
        # A dimensioned sigma (not 0-dim) so that bf16 latents are promoted to float32 for the mix,
        # as the official per-sample [N, 1, 1, 1] sigma does.
        sigma = self.sigma_at(timestep).reshape((1,) * clean.ndim)
        return ((1 - sigma) * clean + sigma * noise).to(noise.dtype)
