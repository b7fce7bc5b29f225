"""Cost of negguide's methods on full-size architectures: SD 1.5-, SDXL-, SD3-medium- and Flux-shaped denoisers with
random weights, built from each family's published configuration (written below; nothing is downloaded).

    python benchmarks/fullsize.py                                          # CPU, reduced sizes (15-20 min, 2 cores)
    python benchmarks/fullsize.py --quick                                  # CPU, tiny sizes, seconds (CI)
    python benchmarks/fullsize.py --device cuda --dtype bfloat16 --full    # real sizes on one GPU (benchmarks/gpu.sh)
    python benchmarks/fullsize.py --families sdxl --runs 5                 # one family, more rounds

Only the denoiser has the family's architecture. The text encoders are small (a 2-layer CLIP, a 1-layer T5 from
the tokenizers of `negguide.testing`) but give the widths the denoiser takes (``cross_attention_dim``,
``joint_attention_dim``, the pooled widths) and the real text token counts: 77 for SD 1.5 and SDXL, 77 + 256 for
SD3, 512 (T5) for Flux. The VAE is the small one of `negguide.testing` (f = 8): runs stop at the latents, so it only
encodes NegToMe's reference image.

Sizes (``--full`` / default / ``--quick``):

* ``--full``: the published configurations at their native resolution, SD 1.5 at 512x512, SDXL, SD3 and Flux at
  1024x1024; for a GPU in bfloat16 (``--device cuda --dtype bfloat16``), sized to finish within 10 minutes on one
  H100 (one image, 5 steps, 3 rounds; Flux takes most of it).
* default (CPU): cut to fit 2 cores in 15 to 20 minutes. Attention keeps its real head width (64 for SDXL and SD3,
  128 for Flux, 40/80/160 for SD 1.5) with fewer heads, and the channel widths shrink with it. SD 1.5 (512x512:
  4096/1024/256 tokens) and SDXL (1024x1024: 4096/1024, the levels NegToMe merges at) keep their real token counts
  at every attention level; SD 1.5 keeps its depth, SDXL has one transformer layer per block (of 2 and 10). SD3 (2 of
  24 layers, 6 of 24 heads) and Flux (1 + 1 of 19 + 38 blocks, 3 of 24 heads) run at 512x512, a quarter of the
  1024x1024 image tokens, with the real text tokens. A cut width shrinks the projections and convolutions more than
  attention and NegToMe's token matching (both quadratic in the tokens), so a CPU run overstates NegToMe's share.
  The architectures table lists every change from the published configuration.
* ``--quick``: tiny widths and images, 3 steps, one round: that every path runs, in seconds.

For each family, variants timed per denoising step (`timing.alternating`: one warm-up call each, then ``--runs``
alternating rounds, the median; CPU time of the process on a CPU, wall time with CUDA synchronised on a GPU):

* the stock diffusers pipeline and negguide's ``from_pipe`` of it, with a negative prompt (standard CFG; Flux: true
  CFG, ``true_cfg_scale=4``) and without one (``guidance_scale=1``; Flux: plain): goal <= 1.02. Each call's
  network evaluations are timed too (`around_forward`), so the table also gives the time outside the denoiser,
  the pipeline's own work, free of the denoiser's scatter from round to round;
* Perp-Neg with k = 1, 2, 4 negatives (2 + k rows per image in one forward) against the standard path: goal within
  5% of the ideal (2 + k) / 2, beside the denoiser's own time at 2 + k rows against 2 (how far the hardware is from
  proportional to the rows);
* NegToMe in batch mode (2 images, the second pushed from the first) and reference mode (1 image and one reference
  image, an extra row per branch inside the window), at the paper's settings (SDXL's: threshold 0.7, timesteps
  1000 -> 800, the first fifth of the run; Flux's: threshold 0.65, the first tenth) and at the embedded model's
  (alpha 3, threshold 0.5, steps 0.1 -> 0.5), against the same call without it (the standard path; Flux: plain).
  Its cost falls on the steps inside its window, so the table gives the measured ratio and that ratio projected to
  the window's share of a long run, ``1 + (ratio - 1) * share / (share of this run's steps in the window)``, as
  ``negtome_cost.py`` does; goal on the SDXL-shaped UNet, paper's window: at most +5% (the paper: < 4%);
* NAG (one evaluation per step) against the plain call at ``guidance_scale=1`` and against the standard path (CFG;
  Flux: true CFG).

Peak memory: every variant once more, untimed, under `negguide.memory.peak_memory` (``--memory-steps`` steps: the
CUDA allocator's peak on a GPU, the tracked tensor storage on a CPU, which slows the run); and Perp-Neg with the
largest k once without and once with a ``memory_budget`` of half its largest network evaluation's peak, each
evaluation measured, to show that the split forwards stay under the budget.
``--store DIR`` says where the run is kept (``benchmarks/runs/fullsize/``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import record
import torch
from diffusers import (
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from timing import alternating
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from negguide import NAG, NegToMe, PerpNeg
from negguide.branches import Step
from negguide.memory import peak_memory
from negguide.pipelines import (
    FluxNegGuidePipeline,
    StableDiffusion3NegGuidePipeline,
    StableDiffusionNegGuidePipeline,
    StableDiffusionXLNegGuidePipeline,
)
from negguide.testing import clip_config, flux_components, sd3_components, sd_components, sdxl_components

PROMPT, NEGATIVE = "a red circle", "a blue square"
NEGATIVES = ("a blue square", "a green triangle", "a yellow circle", "a red square")
EMBEDDED_NEGTOME = {"alpha": 3.0, "threshold": 0.5, "start": 0.1, "stop": 0.5}
"""NegToMe's settings on the embedded shapes-world model (the demo's and ``negtome_quality``'s)."""
MIB = 2**20


def clip(hidden: int, projection: int | None = None, cls: type = CLIPTextModel) -> torch.nn.Module:
    """`negguide.testing`'s small CLIP text encoder (2 layers) at another width."""
    config = clip_config("small")
    config.hidden_size, config.projection_dim = hidden, projection or hidden
    torch.manual_seed(0)
    return cls(config)


def t5(width: int) -> T5EncoderModel:
    """A one-layer T5 encoder whose output has the width the transformer's ``joint_attention_dim`` takes."""
    torch.manual_seed(0)
    config = T5Config(vocab_size=1000, d_model=width, d_kv=32, num_heads=2, d_ff=64, num_layers=1,
                      relative_attention_num_buckets=8, dropout_rate=0.0)
    return T5EncoderModel(config)


def sd_text(config: dict) -> dict:
    return {"text_encoder": clip(config["cross_attention_dim"])}


def sdxl_text(config: dict) -> dict:
    """CLIP-L and CLIP-bigG's widths: their hidden states side by side make ``cross_attention_dim`` (768 + 1280),
    the second's pooled projection with the 6 time ids makes the additional embedding's input (1280 + 6 * 256)."""
    first = config["cross_attention_dim"] * 3 // 8
    pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    second = config["cross_attention_dim"] - first
    return {"text_encoder": clip(first), "text_encoder_2": clip(second, pooled, CLIPTextModelWithProjection)}


def sd3_text(config: dict) -> dict:
    """CLIP-L and CLIP-bigG (pooled: 768 + 1280) and T5 at ``joint_attention_dim``."""
    first = config["pooled_projection_dim"] * 3 // 8
    second = config["pooled_projection_dim"] - first
    return {
        "text_encoder": clip(first, first, CLIPTextModelWithProjection),
        "text_encoder_2": clip(second, second, CLIPTextModelWithProjection),
        "text_encoder_3": t5(config["joint_attention_dim"]),
    }


def flux_text(config: dict) -> dict:
    return {"text_encoder": clip(config["pooled_projection_dim"]), "text_encoder_2": t5(config["joint_attention_dim"])}


@dataclass(frozen=True)
class Shape:
    """A denoiser's configuration overrides against the published one, the image side and the T5 tokens."""

    overrides: dict[str, Any]
    size: int
    t5_tokens: int | None = None


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    stock: type
    ours: type
    denoiser: type
    components: Callable[[str], dict]
    text: Callable[[dict], dict]
    published: dict[str, Any]
    shapes: dict[str, Shape]
    standard: dict[str, Any]
    """Call arguments of the standard path: the negative prompt (Flux: with true CFG)."""
    plain: dict[str, Any]
    """Call arguments of one evaluation per step, no negative."""
    negtome: dict[str, Any] = field(default_factory=dict)
    """NegToMe's paper settings beyond its defaults (SDXL's)."""

    @property
    def denoiser_name(self) -> str:
        return "unet" if self.denoiser is UNet2DConditionModel else "transformer"

    @property
    def distilled(self) -> bool:
        """Guidance-distilled (Flux): NegToMe and NAG are measured without true CFG."""
        return "true_cfg_scale" in self.standard


SD15 = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SDXL = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}
SD3_MEDIUM = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
}
FLUX = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "sd15", "SD 1.5-shaped UNet", StableDiffusionPipeline, StableDiffusionNegGuidePipeline,
            UNet2DConditionModel, sd_components, sd_text, SD15,
            {
                "full": Shape({}, 512),
                "reduced": Shape({"block_out_channels": (40, 80, 160, 160), "norm_num_groups": 8,
                                  "attention_head_dim": 1}, 512),
                "quick": Shape({"block_out_channels": (32, 32, 64, 64), "norm_num_groups": 8, "layers_per_block": 1,
                                "cross_attention_dim": 64}, 128),
            },
            {"negative_prompt": NEGATIVE}, {"guidance_scale": 1.0},
        ),
        Family(
            "sdxl", "SDXL-shaped UNet", StableDiffusionXLPipeline, StableDiffusionXLNegGuidePipeline,
            UNet2DConditionModel, sdxl_components, sdxl_text, SDXL,
            {
                "full": Shape({}, 1024),
                "reduced": Shape({"block_out_channels": (32, 64, 128), "transformer_layers_per_block": (1, 1, 1),
                                  "attention_head_dim": (1, 1, 2)}, 1024),
                "quick": Shape({"block_out_channels": (32, 64, 64), "norm_num_groups": 8, "layers_per_block": 1,
                                "transformer_layers_per_block": (1, 1, 1), "attention_head_dim": (2, 4, 4),
                                "cross_attention_dim": 64, "addition_time_embed_dim": 8,
                                "projection_class_embeddings_input_dim": 6 * 8 + 40}, 256),
            },
            {"negative_prompt": NEGATIVE}, {"guidance_scale": 1.0},
        ),
        Family(
            "sd3", "SD3-medium-shaped transformer", StableDiffusion3Pipeline, StableDiffusion3NegGuidePipeline,
            SD3Transformer2DModel, sd3_components, sd3_text, SD3_MEDIUM,
            {
                "full": Shape({}, 1024, 256),
                "reduced": Shape({"num_layers": 2, "num_attention_heads": 6, "caption_projection_dim": 384}, 512, 256),
                "quick": Shape({"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16,
                                "caption_projection_dim": 32, "joint_attention_dim": 64,
                                "pooled_projection_dim": 64}, 128, 32),
            },
            {"negative_prompt": NEGATIVE}, {"guidance_scale": 1.0},
        ),
        Family(
            "flux", "Flux-shaped transformer", FluxPipeline, FluxNegGuidePipeline,
            FluxTransformer2DModel, flux_components, flux_text, FLUX,
            {
                "full": Shape({}, 1024, 512),
                "reduced": Shape({"num_layers": 1, "num_single_layers": 1, "num_attention_heads": 3}, 512, 512),
                "quick": Shape({"num_layers": 1, "num_single_layers": 1, "num_attention_heads": 2,
                                "attention_head_dim": 16, "axes_dims_rope": (4, 4, 8), "joint_attention_dim": 64,
                                "pooled_projection_dim": 32}, 128, 32),
            },
            {"negative_prompt": NEGATIVE, "true_cfg_scale": 4.0}, {},
            negtome={"threshold": 0.65, "stop": 0.1},
        ),
    )
}


def denoiser(family: Family, config: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The denoiser with random weights, created on ``device`` in ``dtype`` (Flux's 12B parameters never pass
    through the CPU)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = family.denoiser(**config)
    finally:
        torch.set_default_dtype(default)
    return model.to(device=device, dtype=dtype).eval()


def parameters(family: Family, config: dict) -> int:
    """Parameters of the denoiser built from ``config``, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in family.denoiser(**config).parameters())


def pipelines(family: Family, config: dict, device: torch.device, dtype: torch.dtype):
    """The stock pipeline on the full-size denoiser and small text encoders and VAE, and negguide's ``from_pipe``."""
    components = family.components("small")
    components.update(family.text(config))
    components[family.denoiser_name] = denoiser(family, config, device, dtype)
    stock = family.stock(**components).to(device, dtype)
    ours = family.ours.from_pipe(stock)
    for pipe in (stock, ours):
        pipe.set_progress_bar_config(disable=True)
    return stock, ours


def tokens(family: Family, config: dict, shape: Shape) -> str:
    """What the run's sizes mean in tokens: a UNet's attention levels, a transformer's image and text tokens."""
    latent = shape.size // 8
    if family.denoiser is UNet2DConditionModel:
        levels = [(latent >> level) ** 2 for level, kind in enumerate(config["down_block_types"]) if "CrossAttn" in kind]
        return f"attention levels of {'/'.join(map(str, levels))} image tokens, 77 text tokens"
    image = (latent // 2) ** 2
    text = 77 + shape.t5_tokens if family.name == "sd3" else shape.t5_tokens
    return f"{image} image tokens, {text} text tokens"


def reductions(family: Family, shape: Shape) -> str:
    """The changes from the published configuration, ``key published -> used``."""
    changes = [f"{key} {_text(family.published[key])} -> {_text(value)}" for key, value in shape.overrides.items()]
    return "; ".join(changes) or "none"


def _text(value: Any) -> str:
    return "/".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


@dataclass(frozen=True)
class Variant:
    name: str
    pipe: str  # "stock" or "ours"
    call: dict[str, Any]
    images: int = 1
    baseline: str | None = None


def variants(family: Family, ks: list[int], reference: PIL.Image.Image) -> list[Variant]:
    """The variants of one family, each with the variant its ratio is taken to."""
    scales = {key: value for key, value in family.standard.items() if key != "negative_prompt"}
    base, base_call = ("plain", family.plain) if family.distilled else ("standard", family.standard)
    paper = family.negtome
    out = [
        Variant("stock", "stock", family.standard),
        Variant("standard", "ours", family.standard, baseline="stock"),
        Variant("stock, no negative", "stock", family.plain),
        Variant("plain", "ours", family.plain, baseline="stock, no negative"),
        *(Variant(f"Perp-Neg k={k}", "ours", {**scales, "guidance": PerpNeg(list(NEGATIVES[:k]))},
                  baseline="standard") for k in ks),
        Variant("NAG", "ours", {**family.plain, "guidance": NAG([NEGATIVE])}, baseline="plain"),
        Variant(f"{base}, 2 images", "ours", base_call, images=2),
    ]
    for setting, settings in (("paper", paper), ("embedded", EMBEDDED_NEGTOME)):
        out.append(Variant(f"NegToMe batch, {setting}", "ours", {**base_call, "guidance": NegToMe(**settings)},
                           images=2, baseline=f"{base}, 2 images"))
        module = NegToMe(mode="reference", reference=reference, **settings)
        out.append(Variant(f"NegToMe reference, {setting}", "ours", {**base_call, "guidance": module}, baseline=base))
    return out


def runner(pipe, variant: Variant, shape: Shape, steps: int, device: torch.device, **more) -> Callable[[int], object]:
    call = {"prompt": PROMPT, "height": shape.size, "width": shape.size, "num_inference_steps": steps,
            "output_type": "latent", "num_images_per_prompt": variant.images, **variant.call, **more}
    if shape.t5_tokens is not None:
        call["max_sequence_length"] = shape.t5_tokens

    def run(round_: int) -> None:
        generator = [torch.Generator().manual_seed(100 * round_ + i) for i in range(variant.images)]
        pipe(**call, generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def measure(family: Family, profile: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time per step and peak memory of every variant of ``family``."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    shape = family.shapes[profile]
    config = {**family.published, **shape.overrides}
    started = time.perf_counter()
    stock, ours = pipelines(family, config, device, dtype)
    pipes = {"stock": stock, "ours": ours}
    rng = np.random.default_rng(0)
    reference = PIL.Image.fromarray(rng.integers(0, 256, (shape.size, shape.size, 3), dtype=np.uint8))
    chosen = variants(family, args.ks, reference)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    model = getattr(ours, family.denoiser_name)
    inside: dict[str, list[float]] = {v.name: [] for v in chosen}
    with around_forward(model, functools.partial(spent, clock)) as forwards:
        timings = alternating(
            {v.name: inside_time(runner(pipes[v.pipe], v, shape, args.steps, device), forwards, inside[v.name])
             for v in chosen},
            args.runs, clock=clock,
        )
    print(f"{family.name}: timed in {time.perf_counter() - started:.0f} s", flush=True)
    peaks = {}
    for v in chosen:
        run = runner(pipes[v.pipe], v, shape, args.memory_steps, device)
        with peak_memory(device) as peak:
            run(0)
        peaks[v.name] = peak.bytes
    largest = next(v for v in chosen if v.name == f"Perp-Neg k={max(args.ks)}")
    with around_forward(model, functools.partial(peak_memory, device)) as whole:
        runner(ours, largest, shape, args.memory_steps, device)(0)
    budget = max(peak.bytes for peak in whole) // 2
    with around_forward(model, functools.partial(peak_memory, device)) as split:
        runner(ours, largest, shape, args.memory_steps, device, memory_budget=budget)(0)
    result = {
        "config": config,
        "shape": {"size": shape.size, "t5_tokens": shape.t5_tokens},
        "parameters": sum(p.numel() for p in getattr(ours, family.denoiser_name).parameters()),
        "published_parameters": parameters(family, family.published),
        "tokens": tokens(family, config, shape),
        "reductions": reductions(family, shape),
        "variants": [{"name": v.name, "images": v.images, "baseline": v.baseline} for v in chosen],
        "timings": {name: timing.to_dict() for name, timing in timings.items()},
        "denoiser_s": inside,
        "peaks": peaks,
        "budget": {"variant": largest.name, "budget": budget, "peaks": [peak.bytes for peak in whole],
                   "split_peaks": [peak.bytes for peak in split]},
        "elapsed_s": time.perf_counter() - started,
    }
    del stock, ours, pipes, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


@contextmanager
def around_forward(model: torch.nn.Module, measure: Callable[[], AbstractContextManager]) -> Iterator[list[Any]]:
    """Every forward of ``model`` inside the block runs inside a ``measure()`` context; the list gets what each
    context gave (e.g. `peak_memory`'s `Peak`), one per evaluation. Hooks on ``model`` itself run outside it."""
    measured: list[Any] = []
    forward = model.forward

    def wrapped(*args, **kwargs):
        with measure() as value:
            output = forward(*args, **kwargs)
        measured.append(value)
        return output

    model.forward = wrapped
    try:
        yield measured
    finally:
        del model.forward


@dataclass
class Spent:
    seconds: float = 0.0


@contextmanager
def spent(clock: Callable[[], float]) -> Iterator[Spent]:
    """The ``clock`` seconds the block takes."""
    value, start = Spent(), clock()
    yield value
    value.seconds = clock() - start


def inside_time(run: Callable[[int], object], forwards: list[Spent], seconds: list[float]) -> Callable[[int], None]:
    """``run`` that also appends to ``seconds`` the time of the network evaluations it made (``forwards``, filled
    by `around_forward` with `spent`), except in the warm-up (round 0)."""

    def timed(round_: int) -> None:
        before = len(forwards)
        run(round_)
        if round_:
            seconds.append(sum(value.seconds for value in forwards[before:]))

    return timed


def window_share(module: NegToMe, steps: int) -> float:
    """The share of a run of ``steps`` steps inside the module's window."""
    return sum(module.is_active(Step(i, steps, 0.0)) for i in range(steps)) / steps


def results(measured: dict[str, dict], profile: str, args: argparse.Namespace) -> dict[str, Any]:
    """The run's tables: architectures, standard path, Perp-Neg, NegToMe, NAG, memory."""
    where = (f"{args.device}, {args.dtype}" + (f", {args.threads} thread(s)" if args.device == "cpu" else "")
             + f", {args.steps} steps, median of {args.runs} alternating rounds after a warm-up call each")
    clock = "wall time, CUDA synchronised" if args.device.startswith("cuda") else "process CPU time"
    sizes = {
        "full": "Published configurations at their native resolution.",
        "reduced": "CPU sizes, cut from the published configurations as the architectures table says: real head "
                   "widths with fewer heads and narrower channels; SD 1.5 and SDXL keep their real token counts at "
                   "every attention level, SD3 and Flux run a quarter of their 1024x1024 image tokens with the real "
                   "text tokens.",
        "quick": "Tiny sizes for CI: that every path runs, not what it costs.",
    }[profile]
    def ms_per_step(runs_s: list[float]) -> float:
        """Milliseconds per denoising step of the median call among ``runs_s`` (seconds per call)."""
        return 1000 * statistics.median(runs_s) / args.steps

    per_step, inside, outside = {}, {}, {}
    for name, m in measured.items():
        per_step[name] = {variant: ms_per_step(t["runs_s"]) for variant, t in m["timings"].items()}
        inside[name] = {variant: ms_per_step(seconds) for variant, seconds in m["denoiser_s"].items()}
        outside[name] = {
            variant: ms_per_step([total - spent for total, spent in zip(t["runs_s"], m["denoiser_s"][variant],
                                                                        strict=True)])
            for variant, t in m["timings"].items()
        }
    architecture_rows = [
        [FAMILIES[name].title, m["parameters"] / 1e6, m["published_parameters"] / 1e6,
         f"{m['shape']['size']}x{m['shape']['size']}", m["tokens"], m["reductions"]]
        for name, m in measured.items()
    ]
    standard_rows = []
    for name, ms in per_step.items():
        out = outside[name]
        for call, stock, ours in (("negative", "stock", "standard"), ("no negative", "stock, no negative", "plain")):
            standard_rows.append([FAMILIES[name].title, call, ms[stock], ms[ours], ms[ours] / ms[stock], out[stock],
                                  out[ours], 1 + (out[ours] - out[stock]) / ms[stock]])
    perpneg_rows = []
    for name, ms in per_step.items():
        for k in args.ks:
            variant = f"Perp-Neg k={k}"
            ratio, ideal = ms[variant] / ms["standard"], (2 + k) / 2
            alone = inside[name][variant] / inside[name]["standard"]
            perpneg_rows.append([FAMILIES[name].title, k, ms[variant], ms["standard"], ratio, ideal, ratio / ideal,
                                 alone, ratio / alone])
    negtome_rows = []
    for name, ms in per_step.items():
        family = FAMILIES[name]
        bases = {v["name"]: v["baseline"] for v in measured[name]["variants"]}
        for setting, settings in (("paper", family.negtome), ("embedded", EMBEDDED_NEGTOME)):
            module = NegToMe(**settings)
            share, measured_share = module.stop - module.start, window_share(module, args.steps)
            for mode in ("batch", "reference"):
                variant = f"NegToMe {mode}, {setting}"
                ratio = ms[variant] / ms[bases[variant]]
                projected = 1 + (ratio - 1) * share / measured_share if measured_share else None
                negtome_rows.append([family.title, mode, setting, 2 if mode == "batch" else 1, ms[variant],
                                     ms[bases[variant]], ratio, measured_share, share, projected])
    nag_rows = []
    for name, ms in per_step.items():
        nag_rows.append([FAMILIES[name].title, ms["NAG"], ms["plain"], ms["NAG"] / ms["plain"], ms["standard"],
                         ms["NAG"] / ms["standard"]])
    memory_rows, budget_rows = [], []
    for name, m in measured.items():
        peaks = m["peaks"]
        for v in m["variants"]:
            base = v["baseline"]
            memory_rows.append([FAMILIES[name].title, v["name"], v["images"], peaks[v["name"]] / MIB, base,
                                peaks[v["name"]] / peaks[base] if base and peaks[base] else None])
        b = m["budget"]
        steps = args.memory_steps
        budget_rows.append([FAMILIES[name].title, b["variant"], max(b["peaks"]) / MIB, len(b["peaks"]) / steps,
                            b["budget"] / MIB, max(b["split_peaks"]) / MIB, len(b["split_peaks"]) / steps,
                            "yes" if max(b["split_peaks"]) <= b["budget"] else "no"])
    measured_how = f"Milliseconds per denoising step: a call's {clock} divided by its steps ({where})."
    tables = [
        record.table(
            f"Architectures ({profile} sizes): random weights, published configurations with the changes listed",
            ["denoiser", "parameters (M)", "published (M)", "image", "tokens", "changed from the published config"],
            architecture_rows,
            formats=[None, ".0f", ".0f", None, None, None],
            note=f"{sizes} Text encoders are small (2-layer CLIP, 1-layer T5) but give the widths the denoiser takes; "
                 "the VAE is small and only encodes NegToMe's reference image.",
        ),
        record.table(
            "Standard path against stock diffusers (same components, negguide's from_pipe of the stock pipeline)",
            ["denoiser", "call", "stock ms/step", "negguide ms/step", "ratio", "stock outside the denoiser",
             "negguide outside the denoiser", "ratio, same denoiser time"],
            standard_rows,
            formats=[None, None, ".1f", ".1f", ".3f", ".1f", ".1f", ".3f"],
            note=f"{measured_how} With a negative prompt at the family's default guidance scale (Flux: true CFG, "
                 "where the stock pipeline runs two forwards and negguide one batched forward) and without one "
                 "(guidance_scale=1; Flux: plain); 1 image. The whole call's time scatters by several percent from "
                 "round to round with the denoiser's; the time outside the denoiser's forward (the call's time less "
                 "that of its network evaluations, median of the rounds) is the pipeline's own work, and the last "
                 "column is the ratio with the denoiser's time taken as equal: 1 + (negguide's outside - stock's "
                 "outside) / stock's step, negguide's overhead with the denoiser's noise taken out (Flux with a "
                 f"negative: the batched forward's gain is left out too). Goal: ratio <= 1.02. {sizes}",
        ),
        record.table(
            "Perp-Neg against the standard path, k negatives in one batched forward",
            ["denoiser", "k", "Perp-Neg ms/step", "standard ms/step", "ratio", "ideal (2+k)/2", "ratio / ideal",
             "denoiser alone: ratio", "ratio / denoiser's ratio"],
            perpneg_rows,
            formats=[None, None, ".1f", ".1f", ".3f", ".1f", ".3f", ".3f", ".3f"],
            note=f"{measured_how} 1 image; Flux with true CFG. Goal: ratio / ideal within 0.95 to 1.05. The ideal "
                 "takes a forward's time as proportional to its rows; the denoiser alone (the time of its "
                 "evaluations in the same calls, 2 + k rows against 2) shows how far the hardware departs from "
                 f"that, and the last column what negguide adds to it. {sizes}",
        ),
        record.table(
            "NegToMe against the same call without it",
            ["denoiser", "mode", "settings", "images", "ms/step", "without ms/step", "ratio", "run's steps in window",
             "window", "ratio at the window's share"],
            negtome_rows,
            formats=[None, None, None, None, ".1f", ".1f", ".3f", ".2f", ".2f", ".3f"],
            note=f"{measured_how} Batch mode: 2 images of one prompt, the second pushed from the first; reference "
                 "mode: 1 image and one reference image, run as an extra row per branch inside the window. Paper "
                 "settings: threshold 0.7, the first fifth of the run (Flux: threshold 0.65, the first tenth); "
                 "embedded: alpha 3, threshold 0.5, steps 0.1 to 0.5. Without it: the standard path (Flux: plain, "
                 "no true CFG). Reference mode also encodes its reference once per call, with the small VAE (the "
                 "family's own VAE costs more). The last column projects the ratio to a long run with the window's "
                 "share of its steps, all of the overhead taken as cost of the steps in the window. Goal: "
                 "SDXL-shaped UNet, batch mode, paper settings, at most 1.05 (the paper: < 4%). "
                 f"{sizes} A CPU run's cut widths overstate NegToMe's share: its matching is quadratic in the tokens "
                 "like attention, while the projections and convolutions it is compared with shrink with the width.",
        ),
        record.table(
            "NAG: one evaluation per step with the negative inside attention",
            ["denoiser", "NAG ms/step", "plain ms/step", "ratio to plain", "standard ms/step", "ratio to standard"],
            nag_rows,
            formats=[None, ".1f", ".1f", ".3f", ".1f", ".3f"],
            note=f"{measured_how} NAG and plain at guidance_scale=1 (Flux: no true CFG), 1 image; standard: CFG "
                 f"with the negative (Flux: true CFG). {sizes}",
        ),
        record.table(
            "Peak memory per call",
            ["denoiser", "variant", "images", "peak MiB", "baseline", "ratio to baseline"],
            memory_rows,
            formats=[None, None, None, ".1f", None, ".3f"],
            note=f"One untimed call of {args.memory_steps} steps per variant under negguide.memory.peak_memory: the "
                 "memory allocated beyond what was allocated before the call (CUDA: the allocator's peak; CPU: the "
                 f"tensor storage created and alive, weights excluded). {sizes}",
        ),
        record.table(
            "Perp-Neg with a memory_budget of half its one-evaluation peak",
            ["denoiser", "variant", "evaluation peak MiB", "forwards per step", "memory_budget MiB",
             "evaluation peak MiB, budget", "forwards per step, budget", "within budget"],
            budget_rows,
            formats=[None, None, ".1f", ".2f", ".1f", ".1f", ".2f", None],
            note=f"One call of {args.memory_steps} steps without a budget and one with memory_budget set to half the "
                 "largest peak of a network evaluation without one; the peaks are those of each evaluation of the "
                 "denoiser (negguide.memory.peak_memory around its forward), the budget's own measure: the memory "
                 "one evaluation uses beyond what is allocated before it. With the budget a step's rows run in the "
                 "fewest forwards that fit; the first forward of a row shape runs one more small chunk to measure "
                 "what a row needs.",
        ),
    ]
    return {
        "title": "Cost on full-size architectures",
        "summary": (
            "SD 1.5-, SDXL-, SD3-medium- and Flux-shaped denoisers with random weights built from the published "
            "configurations (nothing downloaded): the standard path against stock diffusers, Perp-Neg against its "
            "ideal (2 + k) / 2, NegToMe's overhead in batch and reference mode, NAG, and peak memory. A GPU run has "
            "the real sizes; a CPU run cuts them as its architectures table says."
        ),
        "tables": tables,
        "measured": measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the published sizes (for a GPU)")
    size.add_argument("--quick", action="store_true", help="tiny sizes, 3 steps, 1 round: seconds")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--runs", type=int, default=None, help="timing rounds (default: 3, quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per call (default: 5, quick 3)")
    parser.add_argument("--memory-steps", type=int, default=3, help="steps of the memory calls (every window in)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4], help="Perp-Neg's numbers of negatives")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    record.add_store_argument(parser)
    args = parser.parse_args()
    profile = "full" if args.full else "quick" if args.quick else "reduced"
    args.runs = args.runs or (1 if args.quick else 3)
    args.steps = args.steps or (3 if args.quick else 5)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    measured = {}
    for name in args.families:
        print(f"{name} ({profile})...", flush=True)
        measured[name] = measure(FAMILIES[name], profile, args)
        print(f"{name}: {measured[name]['elapsed_s']:.0f} s", flush=True)
    run = results(measured, profile, args)
    record.show(run)
    print(f"\nall families: {time.perf_counter() - started:.0f} s")
    settings = {key: value for key, value in vars(args).items() if key != "store"} | {"profile": profile}
    model = f"{'+'.join(args.families)}-{profile}-random"
    print(record.save("fullsize", settings, run, model=model, folder=args.store))


if __name__ == "__main__":
    main()
