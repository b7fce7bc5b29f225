"""Distil the shapes-world model into a guidance-distilled student: one UNet evaluation per step makes a
classifier-free-guided prediction, the guidance scale entering the network as an embedding.

    python -m negguide.shapes.distill --out negguide/shapes/distilled --work .train/distilled

The student is the teacher's UNet with a guidance-scale embedding added to its timestep embedding
(diffusers' ``time_cond_proj_dim``, the convention of LCM, Luo et al., arXiv 2310.04378); the new
projection starts at zero, so the untrained student is the teacher's conditional branch. It learns to
reproduce the teacher's guided prediction ``e_u + w * (e_c - e_u)`` (Ho & Salimans, arXiv 2207.12598) for
``w`` drawn uniformly from ``--scales``, on the scenes the teacher was trained on, noised to random
timesteps: the first stage of Meng et al., "On Distillation of Guided Diffusion Models" (arXiv 2210.03142).
The text encoder, VAE and tokenizer stay the teacher's and are not written again: the folder holds the
student's UNet (fp16) and the training log, and `negguide.load_pipeline("shapes-world-distilled")` puts it
beside the teacher's other components.

Resumable like `negguide.shapes.train`: checkpoints and a JSON-lines log in ``--work``; every random draw is
seeded from ``--seed`` and the step number.
"""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from negguide.shapes.tokenizer import MAX_LENGTH
from negguide.shapes.train import NOISE_SCHEDULE, Log, encode_dataset, lr_at, save_checkpoint

GUIDANCE_EMBEDDING_DIM = 256
"""Width of the student's guidance-scale embedding (``time_cond_proj_dim``), as in LCM's SD 1.5 student."""


def student_from(teacher: UNet2DConditionModel) -> UNet2DConditionModel:
    """The teacher's UNet with a zero-initialised guidance-scale projection: the same prediction at any scale."""
    student = UNet2DConditionModel.from_config(teacher.config, time_cond_proj_dim=GUIDANCE_EMBEDDING_DIM)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or missing != ["time_embedding.cond_proj.weight"]:
        raise RuntimeError(f"teacher and student differ beyond the guidance embedding: {missing}, {unexpected}")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.to(teacher.dtype)


def guided_target(
    teacher: UNet2DConditionModel,
    xt: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """The teacher's classifier-free-guided prediction, one scale per sample: ``e_u + w * (e_c - e_u)``."""
    with torch.no_grad():
        e_c, e_u = teacher(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([cond, uncond])).sample.chunk(2)
    return e_u + scale.view(-1, 1, 1, 1) * (e_c - e_u)


def distill(args, pipe: StableDiffusionPipeline, data: dict, work: Path, log: Log) -> UNet2DConditionModel:
    final = work / "student_done.pt"
    teacher = pipe.unet.eval().requires_grad_(False)
    student = student_from(teacher)
    if final.exists():
        student.load_state_dict(torch.load(final)["student"])
        return student
    text = pipe.text_encoder.eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=1e-2)
    ema = copy.deepcopy(student)
    params, ema_params = list(student.parameters()), list(ema.parameters())
    noise = DDPMScheduler(**NOISE_SCHEDULE)
    snr = noise.alphas_cumprod / (1 - noise.alphas_cumprod)
    weight_of_t = torch.clamp(snr, max=5.0) / snr
    ckpt = work / "student.pt"
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        student.load_state_dict(state["student"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log(phase="distill", event="resumed", step=step)
    with torch.no_grad():
        empty = text(data["empty"][None])[0]
    low, high = args.scales
    student.train()
    n = data["latents"].shape[0]
    while step < args.steps:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (args.batch,), generator=g)
        x0 = data["latents"][idx]
        ids = data["ids"][idx].clone()
        ids[torch.rand(args.batch, generator=g) < args.caption_dropout] = data["empty"]
        eps = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, noise.config.num_train_timesteps, (args.batch,), generator=g)
        scale = low + (high - low) * torch.rand(args.batch, generator=g)
        xt = noise.add_noise(x0, eps, t)
        with torch.no_grad():
            cond = text(ids)[0]
        target = guided_target(teacher, xt, t, cond, empty.expand_as(cond), scale)
        w_embedding = pipe.get_guidance_scale_embedding(scale - 1, embedding_dim=GUIDANCE_EMBEDDING_DIM)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, 100)
        pred = student(xt, t, cond, timestep_cond=w_embedding).sample
        loss = (((pred - target) ** 2).mean(dim=(1, 2, 3)) * weight_of_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - min(args.ema, (1 + step) / (10 + step)))
        if step % 50 == 0 or step == args.steps:
            log(phase="distill", step=step, loss=round(loss.item(), 5), lr=round(opt.param_groups[0]["lr"], 7))
        if step % args.checkpoint_every == 0:
            save_checkpoint(ckpt, student=student.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step)
    save_checkpoint(final, student=ema.state_dict())
    return ema


def export(student: UNet2DConditionModel, work: Path, out: Path, log: Log) -> None:
    """The student's UNet in fp16 and the run's log: all the folder holds (the rest is the teacher's)."""
    student.to(torch.float16).save_pretrained(out / "unet", safe_serialization=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(phase="export", folder=str(out), megabytes=round(size / 2**20, 2))
    shutil.copyfile(work / "log.jsonl", out / "training_log.jsonl")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m negguide.shapes.distill", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="the teacher pipeline folder (default: the embedded shapes-world model)",
    )
    parser.add_argument("--out", type=Path, default=Path("negguide/shapes/distilled"), help="folder to write")
    parser.add_argument("--work", type=Path, default=Path(".train/distilled"), help="checkpoints and log")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--dataset-size",
        type=int,
        default=60000,
        help="scenes drawn with the teacher's data seed (the teacher's own training set)",
    )
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument(
        "--scales",
        type=float,
        nargs=2,
        default=(3.0, 7.0),
        metavar=("LOW", "HIGH"),
        help="guidance scales the student learns, drawn uniformly (the teacher works at 5)",
    )
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    args = parser.parse_args(argv)
    if not 1.0 <= args.scales[0] <= args.scales[1]:
        parser.error(f"--scales {args.scales[0]} {args.scales[1]}: give LOW <= HIGH, both at least 1")
    from negguide.loading import embedded_model_path

    teacher = args.teacher or embedded_model_path()
    if not (teacher / "model_index.json").is_file():
        parser.error(f"--teacher {teacher}: not a diffusers pipeline folder (no model_index.json)")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    log = Log(args.work)
    log(event="start", **{k: str(v) for k, v in vars(args).items()})
    pipe = StableDiffusionPipeline.from_pretrained(teacher, dtype=torch.float32)
    if pipe.tokenizer.model_max_length != MAX_LENGTH:
        parser.error(
            f"--teacher {teacher}: not a shapes-world model (its tokenizer keeps "
            f"{pipe.tokenizer.model_max_length} tokens, the world's captions {MAX_LENGTH})"
        )
    data = encode_dataset(args, pipe.vae, pipe.tokenizer, args.work, log, keep_scaling=True)
    export(distill(args, pipe, data, args.work, log), args.work, args.out, log)


if __name__ == "__main__":
    main()
