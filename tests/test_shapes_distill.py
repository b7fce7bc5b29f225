"""The distillation command: a student that starts as its teacher, learns the guided prediction, resumes."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open

from negguide.loading import embedded_model_path
from negguide.shapes import distill
from negguide.shapes.distill import GUIDANCE_EMBEDDING_DIM, guided_target, main, student_from


@pytest.fixture(scope="module")
def teacher() -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(embedded_model_path(), dtype=torch.float32)


def test_the_untrained_student_is_the_teachers_conditional_branch_at_any_scale(teacher):
    student = student_from(teacher.unet)
    torch.manual_seed(0)
    latents, context = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 128)
    with torch.no_grad():
        want = teacher.unet(latents, 500, context).sample
        for scale in (1.0, 5.0, 9.0):
            embedding = teacher.get_guidance_scale_embedding(torch.full([2], scale - 1), GUIDANCE_EMBEDDING_DIM)
            assert torch.equal(student(latents, 500, context, timestep_cond=embedding).sample, want)


def test_the_target_is_classifier_free_guidance_per_sample(teacher):
    torch.manual_seed(0)
    xt, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 800])
    cond, uncond = torch.randn(2, 16, 128), torch.randn(2, 16, 128)
    scale = torch.tensor([3.0, 6.5])
    got = guided_target(teacher.unet, xt, t, cond, uncond, scale)
    with torch.no_grad():
        for i in range(2):
            e_c = teacher.unet(xt[i : i + 1], t[i : i + 1], cond[i : i + 1]).sample
            e_u = teacher.unet(xt[i : i + 1], t[i : i + 1], uncond[i : i + 1]).sample
            assert torch.allclose(got[i : i + 1], e_u + scale[i] * (e_c - e_u), atol=1e-5)


def test_a_killed_run_resumes_to_the_same_student_and_writes_only_its_unet(tmp_path, monkeypatch):
    def run(name: str) -> list[str]:
        return ["--out", str(tmp_path / name / "out"), "--work", str(tmp_path / name / "work"), "--dataset-size", "8",
                "--batch", "2", "--lr", "0.01", "--steps", "3", "--checkpoint-every", "1"]

    main(run("whole"))
    saved = distill.save_checkpoint

    def save_then_die(path, **state):
        saved(path, **state)
        if state.get("step") == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(distill, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main(run("killed"))
    monkeypatch.setattr(distill, "save_checkpoint", saved)
    main(run("killed"))
    log = [json.loads(line) for line in (tmp_path / "killed" / "work" / "log.jsonl").read_text().splitlines()]
    assert any(event.get("event") == "resumed" and event["step"] == 2 for event in log)
    whole, resumed = (UNet2DConditionModel.from_pretrained(tmp_path / name / "out" / "unet") for name in ("whole", "killed"))
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters()))
    assert sorted(p.name for p in (tmp_path / "whole" / "out").iterdir()) == ["training_log.jsonl", "unet"]
    assert whole.config.time_cond_proj_dim == GUIDANCE_EMBEDDING_DIM
    with safe_open(tmp_path / "whole" / "out" / "unet" / "diffusion_pytorch_model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float16}  # noqa: SIM118


def test_scales_must_be_ordered(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--scales", "7", "3"])
    assert "LOW <= HIGH" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()
