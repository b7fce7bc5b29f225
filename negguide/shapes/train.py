"""Train the shapes-world text-to-image model from scratch and export it as a diffusers folder.

    python -m negguide.shapes.train --out negguide/shapes/model --work .train/shapes

Four resumable phases, each checkpointed in ``--work`` (re-running the command continues where a
killed run stopped): an f=8 AutoencoderKL on rendered scenes; pre-encoding a fixed data set of scenes
to latents; the UNet and the CLIP text encoder together, with caption dropout so that classifier-free
guidance and negative prompts work (Ho & Salimans, arXiv 2207.12598), min-SNR loss weighting
(Hang et al., arXiv 2303.09556) and an EMA of the weights; and the export of a
``StableDiffusionPipeline`` folder in fp16. Every random draw is seeded from ``--seed`` and the step
number, so a resumed run sees the same batches as an uninterrupted one.

``--init FOLDER`` continues from a pipeline folder this command wrote (the shipped model, say) instead of
starting from nothing: its VAE and latent scaling are kept (no VAE phase) and its UNet and text encoder
are trained further on the world as the code now draws it, the way to try a change of the world without
a run from nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from negguide.shapes.tokenizer import MAX_LENGTH, write_tokenizer
from negguide.shapes.world import IMAGE_SIZE, render, sample_scene

NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "steps_offset": 1}


def vae_config() -> dict:
    return {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "sample_size": IMAGE_SIZE,
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [16, 32, 64, 64], "layers_per_block": 1, "norm_num_groups": 8}


def unet_config() -> dict:
    return {"sample_size": IMAGE_SIZE // 8, "in_channels": 4, "out_channels": 4,
            "block_out_channels": (64, 128, 128), "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 128, "attention_head_dim": 8, "norm_num_groups": 32}


def text_config(tokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256,
                          num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, projection_dim=128)


class Log:
    """Prints and appends one JSON line per event to ``work/log.jsonl``."""

    def __init__(self, work: Path):
        self.path = work / "log.jsonl"
        self.start = time.time()

    def __call__(self, **event) -> None:
        event["time"] = round(time.time() - self.start, 1)
        print(json.dumps(event), flush=True)
        with self.path.open("a") as f:
            f.write(json.dumps(event) + "\n")


def to_tensor(images) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train_vae(args, work: Path, log: Log) -> AutoencoderKL:
    final = work / "vae"
    if (final / "config.json").exists():
        return AutoencoderKL.from_pretrained(final)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    ckpt = work / "vae.pt"
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log(phase="vae", event="resumed", step=step)
    vae.train()
    while step < args.vae_steps:
        rng = random.Random(f"{args.seed}-vae-{step}")
        x = to_tensor([render(sample_scene(rng).objects) for _ in range(args.vae_batch)])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 100)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=torch.Generator().manual_seed(step))).sample
        rec = F.mse_loss(recon, x) + F.l1_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step == args.vae_steps:
            log(phase="vae", step=step, loss=round(rec.item(), 5), kl=round(kl.item(), 3))
        if step % 200 == 0:
            save_checkpoint(ckpt, model=vae.state_dict(), opt=opt.state_dict(), step=step)
    vae.eval()
    vae.save_pretrained(final)
    return vae


@torch.no_grad()
def encode_dataset(args, vae: AutoencoderKL, tokenizer, work: Path, log: Log, keep_scaling: bool) -> dict:
    path = work / "latents.pt"
    if path.exists():
        return torch.load(path)
    rng = random.Random(f"{args.seed}-data")
    latents, ids, captions = [], [], []
    for begin in range(0, args.dataset_size, 256):
        batch = [sample_scene(rng) for _ in range(min(256, args.dataset_size - begin))]
        latents.append(vae.encode(to_tensor([render(s.objects) for s in batch])).latent_dist.mean)
        captions += [s.caption for s in batch]
    latents = torch.cat(latents)
    scaling = vae.config.scaling_factor if keep_scaling else 1.0 / latents.std().item()
    ids = tokenizer(captions, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                    return_tensors="pt").input_ids
    empty = tokenizer([""], padding="max_length", max_length=MAX_LENGTH, return_tensors="pt").input_ids
    data = {"latents": latents * scaling, "ids": ids, "empty": empty[0], "scaling_factor": scaling}
    torch.save(data, path)
    log(phase="encode", images=len(captions), scaling_factor=round(scaling, 5))
    return data


def fresh_models(seed: int, tokenizer) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**unet_config()), CLIPTextModel(text_config(tokenizer))


def load_init(parser: argparse.ArgumentParser, folder: Path, tokenizer):
    """The VAE, UNet and text encoder of ``folder`` in fp32, after checking it suits this world's tokenizer."""
    if not (folder / "model_index.json").is_file():
        parser.error(f"--init {folder}: not a diffusers pipeline folder (no model_index.json); pass a folder "
                     "this command wrote, such as negguide/shapes/model")
    known = json.loads((folder / "text_encoder" / "config.json").read_text())["vocab_size"]
    if known != len(tokenizer):
        parser.error(f"--init {folder}: its text encoder knows {known} tokens but the world's tokenizer has "
                     f"{len(tokenizer)}; a world with other words needs a run from nothing (leave out --init)")
    return (AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32),
            UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32),
            CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32))


def train_unet(args, data: dict, unet: UNet2DConditionModel, text: CLIPTextModel, work: Path, log: Log):
    final = work / "unet_done.pt"
    if final.exists():
        state = torch.load(final, weights_only=False)
        unet.load_state_dict(state["unet"])
        text.load_state_dict(state["text"])
        return unet, text
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet), copy.deepcopy(text)
    ema_params = [*ema_unet.parameters(), *ema_text.parameters()]
    noise = DDPMScheduler(**NOISE_SCHEDULE)
    alphas = noise.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight_of_t = torch.clamp(snr, max=5.0) / snr
    ckpt = work / "unet.pt"
    step = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["unet"])
        text.load_state_dict(state["text"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
        log(phase="unet", event="resumed", step=step)
    unet.train()
    text.train()
    n = data["latents"].shape[0]
    while step < args.unet_steps:
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (args.unet_batch,), generator=g)
        x0 = data["latents"][idx]
        ids = data["ids"][idx].clone()
        drop = torch.rand(args.unet_batch, generator=g) < args.caption_dropout
        ids[drop] = data["empty"]
        eps = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, noise.config.num_train_timesteps, (args.unet_batch,), generator=g)
        xt = noise.add_noise(x0, eps, t)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.unet_steps, args.unet_lr, 200)
        pred = unet(xt, t, text(ids)[0]).sample
        loss = ((pred - eps) ** 2).mean(dim=(1, 2, 3))
        loss = (loss * weight_of_t[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        if step % 50 == 0 or step == args.unet_steps:
            log(phase="unet", step=step, loss=round(loss.item(), 5), lr=round(opt.param_groups[0]["lr"], 6))
        if step % 250 == 0:
            save_checkpoint(ckpt, unet=unet.state_dict(), text=text.state_dict(), ema_unet=ema_unet.state_dict(),
                            ema_text=ema_text.state_dict(), opt=opt.state_dict(), step=step)
    save_checkpoint(final, unet=ema_unet.state_dict(), text=ema_text.state_dict())
    return ema_unet, ema_text


def export(args, vae, unet, text, tokenizer, scaling: float, out: Path, log: Log) -> None:
    vae.register_to_config(scaling_factor=scaling)
    scheduler = DPMSolverMultistepScheduler(**NOISE_SCHEDULE)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(phase="export", folder=str(out), megabytes=round(size / 2**20, 2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m negguide.shapes.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("negguide/shapes/model"), help="pipeline folder to write")
    parser.add_argument("--work", type=Path, default=Path(".train/shapes"), help="checkpoints and log")
    parser.add_argument("--init", type=Path, default=None,
                        help="a pipeline folder this command wrote, to continue from (its VAE is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--vae-lr", type=float, default=1e-3)
    parser.add_argument("--vae-kl", type=float, default=1e-4)
    parser.add_argument("--dataset-size", type=int, default=60000)
    parser.add_argument("--unet-steps", type=int, default=7000)
    parser.add_argument("--unet-batch", type=int, default=64)
    parser.add_argument("--unet-lr", type=float, default=4e-4)
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--ema", type=float, default=0.999)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    log = Log(args.work)
    log(event="start", **{k: str(v) for k, v in vars(args).items()})
    tokenizer = write_tokenizer(args.work / "tokenizer")
    if args.init is None:
        vae = train_vae(args, args.work, log)
        unet, text = fresh_models(args.seed, tokenizer)
    else:
        vae, unet, text = load_init(parser, args.init, tokenizer)
    data = encode_dataset(args, vae, tokenizer, args.work, log, keep_scaling=args.init is not None)
    unet, text = train_unet(args, data, unet, text, args.work, log)
    export(args, vae, unet, text, tokenizer, data["scaling_factor"], args.out, log)


if __name__ == "__main__":
    main()
