"""The flow-matching schedule: exact float32 tables, warped timesteps, x0 and re-noising."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_cases, load_json, require_fixture, sibling
from inspatio_nodes.core.schedule import FlowMatchSchedule
from safetensors.torch import load_file

SAMPLER_CASES = fixture_cases("*dit_sampler*_io*.safetensors")


def schedule_of(config: dict) -> FlowMatchSchedule:
    sampler = config["sampler"]
    return FlowMatchSchedule(
        denoising_steps=tuple(sampler["denoising_step_list_config"]),
        shift=sampler["timestep_shift"],
        num_train_timesteps=sampler["num_train_timesteps"],
    )


@pytest.mark.parametrize("case_path", SAMPLER_CASES)
def test_tables_and_warped_timesteps_are_the_official_float32_values(case_path):
    io = load_file(str(require_fixture(case_path)))
    config = load_json(sibling(case_path, "io", "config", ".json"))
    schedule = schedule_of(config)

    assert torch.equal(schedule.sigmas, io["scheduler_sigmas"])
    assert torch.equal(schedule.timesteps, io["scheduler_timesteps"])
    assert torch.equal(schedule.warped_timesteps, io["denoising_step_list"])
    for step, recorded in enumerate(config["sampler"]["warped_steps"]):
        timestep = schedule.warped_timesteps[step]
        assert timestep.item() == float.fromhex(recorded["timestep_float32_hex"])
        assert schedule.sigma_at(timestep).item() == float.fromhex(recorded["sigma_float32_hex"])


@pytest.mark.parametrize("case_path", SAMPLER_CASES)
def test_x0_and_renoise_reproduce_the_recorded_steps_exactly(case_path):
    io = load_file(str(require_fixture(case_path)))
    config = load_json(sibling(case_path, "io", "config", ".json"))
    schedule = schedule_of(config)
    steps = len(schedule.denoising_steps)

    for block in range(config["latent"]["num_blocks"]):
        for step in range(steps):
            prefix = f"block{block}.step{step}"
            timestep = schedule.warped_timesteps[step]
            x0 = schedule.x0_from_flow(io[f"{prefix}.x_t"], io[f"{prefix}.flow_pred"], timestep)
            assert torch.equal(x0, io[f"{prefix}.x0_pred"])
            if step + 1 < steps:
                noise = io["renoise"][block * (steps - 1) + step].reshape(io[f"{prefix}.x_t"].shape)
                renoised = schedule.add_noise(x0, noise, schedule.warped_timesteps[step + 1])
                assert torch.equal(renoised, io[f"block{block}.step{step + 1}.x_t"])


def test_release_schedule_warps_to_the_documented_values():
    schedule = FlowMatchSchedule()
    assert schedule.warped_timesteps.tolist() == [1000.0, 937.5, 833.3333129882812, 625.0]
    assert schedule.sigma_at(schedule.warped_timesteps).tolist() == [
        1.0,
        0.9375,
        0.8333333134651184,
        0.625,
    ]


def test_x0_is_computed_in_float64_then_cast():
    schedule = FlowMatchSchedule()
    generator = torch.Generator().manual_seed(0)
    noisy, flow = (
        torch.randn(2, 3, 4, generator=generator),
        torch.randn(2, 3, 4, generator=generator),
    )
    timestep = schedule.warped_timesteps[2]
    sigma64 = schedule.sigma_at(timestep).double()
    expected = (noisy.double() - sigma64 * flow.double()).float()
    assert torch.equal(schedule.x0_from_flow(noisy, flow, timestep), expected)


def test_bf16_renoise_mixes_in_float32_and_returns_the_noise_dtype():
    schedule = FlowMatchSchedule()
    clean = torch.randn(1, 3, 4, dtype=torch.bfloat16)
    noise = torch.randn(1, 3, 4, dtype=torch.bfloat16)
    timestep = schedule.warped_timesteps[1]
    sigma = schedule.sigma_at(timestep)
    expected = ((1 - sigma) * clean.float() + sigma * noise.float()).bfloat16()
    renoised = schedule.add_noise(clean, noise, timestep)
    assert renoised.dtype == torch.bfloat16
    assert torch.equal(renoised, expected)


@pytest.mark.parametrize("steps", [(), (1000, 0), (1001,)])
def test_out_of_range_denoising_steps_are_refused(steps):
    with pytest.raises(ValueError):
        FlowMatchSchedule(denoising_steps=steps)
