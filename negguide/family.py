"""What the pipelines share around the per-step core (`negguide.core`): the call's texts per text encoder,
caller-given embeddings, IP-Adapter image embeddings, the patched denoising loop with diffusers' cache contexts,
and the latent helpers of the flow-matching families (SD3, Flux)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.utils import logging
from diffusers.utils.torch_utils import get_module_execution_device

from negguide.branches import CallInfo, EncoderTexts, Step, Text, TextKey
from negguide.core import Denoiser, Fields, Guide, embeds_conditions
from negguide.image_conditions import ImageConditions, adapter_fields, per_image
from negguide.image_tokens import image_token_outputs
from negguide.modules.base import PatchContext

logger = logging.get_logger(__name__)

Callback = Callable[..., dict] | PipelineCallback | MultiPipelineCallbacks
Prompt = str | list[str] | None


def callback_inputs(callback: Callback | None, names: Sequence[str] | None) -> list[str]:
    """The tensors a step-end callback asks for: a diffusers callback object's own list, else ``names``."""
    if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
        return list(callback.tensor_inputs)
    return list(names or ["latents"])


def call_info(
    prompts: Sequence[Prompt],
    negative_prompts: Sequence[Prompt],
    prompt_embeds: torch.Tensor | None,
    negative_prompt_embeds: torch.Tensor | None,
    num_images_per_prompt: int,
) -> CallInfo:
    """The call's conditions for a family with several text encoders.

    Args:
        prompts: ``(prompt, prompt_2, ...)``, one call argument per text encoder. As in diffusers, an encoder's
            argument left out (``None`` or empty) takes ``prompt``.
        negative_prompts: ``(negative_prompt, negative_prompt_2, ...)``; left out, an encoder's takes
            ``negative_prompt``, and that is the empty prompt when it is left out too.
        prompt_embeds, negative_prompt_embeds, num_images_per_prompt: as in `CallInfo.from_call`.

    A prompt whose texts are the same for every encoder stays a plain string (so modules such as `PerpNeg` can
    read it); one with different texts becomes an `EncoderTexts`. Embeddings never come with per-encoder texts:
    the stock ``check_inputs`` refuses ``prompt_2`` beside ``prompt_embeds``.
    """
    call = CallInfo.from_call(
        prompts[0], negative_prompts[0], prompt_embeds, negative_prompt_embeds, num_images_per_prompt
    )
    return dataclasses.replace(
        call,
        prompts=_per_encoder(call, call.prompts, prompts[1:], "prompt"),
        negative_prompts=_per_encoder(call, call.negative_prompts, negative_prompts[1:], "negative_prompt"),
    )


def _per_encoder(
    call: CallInfo, firsts: tuple[TextKey, ...], others: Sequence[Prompt], name: str
) -> tuple[TextKey, ...]:
    columns = {i: call.per_prompt(text, f"{name}_{i}") for i, text in enumerate(others, start=2) if text}
    if not columns:
        return firsts
    keys: list[TextKey] = []
    for p, first in enumerate(firsts):
        texts = (first, *(columns[i][p] if i in columns else first for i in range(2, len(others) + 2)))
        keys.append(first if len(set(texts)) == 1 else EncoderTexts(texts))
    return tuple(keys)


def encoder_columns(texts: Sequence[Text], num_encoders: int) -> list[list[str]]:
    """``texts`` as one list of strings per text encoder: a plain string goes to every encoder."""
    rows = [text.texts if isinstance(text, EncoderTexts) else (text,) * num_encoders for text in texts]
    return [list(column) for column in zip(*rows)]


def given_conditions(
    prompt_embeds: torch.Tensor | None,
    pooled_prompt_embeds: torch.Tensor | None,
    negative_prompt_embeds: torch.Tensor | None,
    negative_pooled_prompt_embeds: torch.Tensor | None,
    *,
    pooled_field: str,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[TextKey, Fields]:
    """Caller-given embeddings as conditions (see `embeds_conditions`): per-token embeddings as the field
    ``encoder_hidden_states``, pooled ones as ``pooled_field`` (the stock ``check_inputs`` makes sure the pooled
    embeddings come with the others)."""
    given: dict[TextKey, Fields] = {}
    for source, embeds, pooled in (
        ("prompt_embeds", prompt_embeds, pooled_prompt_embeds),
        ("negative_prompt_embeds", negative_prompt_embeds, negative_pooled_prompt_embeds),
    ):
        if embeds is not None:
            fields = {"encoder_hidden_states": embeds, pooled_field: pooled}
            given.update(
                embeds_conditions(source, **{name: t.to(device=device, dtype=dtype) for name, t in fields.items()})
            )
    return given


@contextmanager
def patched(
    guide: Guide, model: torch.nn.Module, context: PatchContext, num_image_tokens: int | None = None
) -> Iterator[Guide]:
    """`Guide.patch` on ``model``; for a transformer (``num_image_tokens`` given) the hooks of patchers that ask for
    it (`Patcher.image_tokens_only`) see only the image tokens of its attention outputs (`image_token_outputs`).
    Nothing is installed without patchers."""
    with ExitStack() as stack:
        stack.enter_context(guide.patch(model, context))
        if num_image_tokens is not None and any(patcher.image_tokens_only for patcher in guide.patchers):
            stack.enter_context(image_token_outputs(model, num_image_tokens))
        yield guide


def denoising_loop(
    pipe: DiffusionPipeline,
    guide: Guide,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    num_inference_steps: int,
    *,
    denoiser: Callable[[torch.Tensor], Denoiser],
    guidance: Callable[[], tuple[float, bool]],
    callback: Callback | None,
    callback_names: Sequence[str],
    callback_tensors: Callable[[torch.Tensor, Fields, Fields | None], dict[str, torch.Tensor | None]],
    step_kwargs: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Run the scheduler over ``timesteps`` with the guide's prediction at every step; the final latents.

    Call it inside `patched`.

    Args:
        pipe (`DiffusionPipeline`): the pipeline (scheduler, progress bar, ``interrupt``).
        guide (`Guide`): the call's guidance.
        latents (`torch.Tensor`): initial latents, one row per image.
        timesteps (`torch.Tensor`): the scheduler's timesteps; ``num_inference_steps`` sizes the progress bar.
        denoiser: ``denoiser(t)``: the family's network at timestep ``t`` (see `negguide.core`).
        guidance: ``guidance() -> (scale, guided)``, read at every step (callbacks may change the scale).
        callback, callback_names: diffusers' ``callback_on_step_end`` and the tensors it asks for.
        callback_tensors: ``callback_tensors(latents, fields, others)``: every tensor a callback may ask for, given
            the latents, the conditioning fields of the step's whole batch and those of its rows other than the
            prompt's (``None`` without guidance; see `Guide.callback_fields`).
        step_kwargs: extra arguments of ``scheduler.step``.
    """
    num_warmup_steps = max(len(timesteps) - num_inference_steps * pipe.scheduler.order, 0)
    pipe._num_timesteps = len(timesteps)
    with pipe.progress_bar(total=num_inference_steps) as progress_bar:
        guide.prefetch(guidance()[1])
        for i, t in enumerate(timesteps):
            if pipe.interrupt:
                continue
            pipe._current_timestep = t
            scale, guided = guidance()
            prediction = guide.predict(i, latents, denoiser(t), scale, guided)
            latents = pipe.scheduler.step(
                model_output=prediction, timestep=t, sample=latents, **(step_kwargs or {}), return_dict=False
            )[0]
            if callback is not None:
                available = callback_tensors(latents, *guide.callback_fields(i, guided))
                latents = callback(pipe, i, t, {name: available[name] for name in callback_names}).pop(
                    "latents", latents
                )
            if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % pipe.scheduler.order == 0):
                progress_bar.update()
    pipe._current_timestep = None
    return latents


def cache_contexts(network: torch.nn.Module) -> Callable[[str], AbstractContextManager] | None:
    """The `Guide` ``forward_context`` of a network with diffusers' cache hooks (`CacheMixin`: FirstBlockCache,
    TaylorSeer, FasterCache, ...): each batched evaluation runs in the cache context named after its rows
    (`BatchLayout.name`: ``"cond"``; ``"uncond+cond"`` when the negative is batched with the prompt;
    ``"cond[0:4]"`` for a chunk of a memory-split batch). The stock pipelines run one context per branch
    (``"cond"``, ``"uncond"``); here all branches of a step share one evaluation, so a cache decides for all of
    them at once. ``None`` for networks without cache contexts."""
    if not hasattr(network, "cache_context"):
        return None
    return network.cache_context


def ip_adapter_conditions(
    pipe: DiffusionPipeline,
    ip_adapter_image: Any,
    ip_adapter_image_embeds: Any,
    *,
    call: CallInfo,
    guided: bool,
    device: torch.device,
    field: str,
) -> ImageConditions | None:
    """IP-Adapter image embeddings of a family whose stock pipeline pairs them for CFG (SD, SDXL, SD3): the stock
    ``prepare_ip_adapter_image_embeds`` with ``do_classifier_free_guidance=guided`` gives each adapter's
    ``[negative; positive]`` (the negative is zeros, or the first half of given embeddings, as in diffusers). The
    prompt's branch takes the positive embeddings, every other branch the negative ones (zeros without guidance).

    Args:
        pipe: the pipeline (`IPAdapterMixin` or `SD3IPAdapterMixin`).
        ip_adapter_image, ip_adapter_image_embeds: the call's arguments.
        call (`CallInfo`): the call's batch sizes.
        guided (`bool`): whether the call starts with guidance on.
        device (`torch.device`): the execution device.
        field (`str`): the prefix of the fields (`adapter_fields`).
    """
    if ip_adapter_image is None and ip_adapter_image_embeds is None:
        return None
    embeds = pipe.prepare_ip_adapter_image_embeds(
        ip_adapter_image=ip_adapter_image,
        ip_adapter_image_embeds=ip_adapter_image_embeds,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=guided,
    )
    argument = "ip_adapter_image_embeds" if ip_adapter_image_embeds is not None else "ip_adapter_image"
    positive, negative = [], []
    for tensor in [embeds] if isinstance(embeds, torch.Tensor) else embeds:
        uncond, cond = tensor.chunk(2) if guided else (torch.zeros_like(tensor), tensor)
        positive.append(per_image(cond, call.num_images, call.num_prompts, argument))
        negative.append(per_image(uncond, call.num_images, call.num_prompts, argument))
    return ImageConditions(adapter_fields(field, positive), adapter_fields(field, negative))


def true_cfg(negative: bool, true_cfg_scale: float, *, strict: bool = True) -> bool:
    """Whether a guidance-distilled model runs true classifier-free guidance: ``true_cfg_scale > 1`` and something
    ``negative`` (the stock Flux pipeline's rule).

    A negative with ``true_cfg_scale <= 1`` would be ignored: such a model has no unconditional branch of its own.
    With ``strict`` (a guidance module was asked for) that is a ValueError; otherwise (the stock call, ``guidance``
    left out) the negative is ignored as in diffusers, with a warning.
    """
    if negative and true_cfg_scale <= 1:
        message = (
            f"`true_cfg_scale` is {true_cfg_scale}, so the negative prompt would be ignored: a guidance-distilled model "
            "applies negatives through true classifier-free guidance, which runs only with `true_cfg_scale` > 1 (a "
            "second evaluation per step). Set e.g. true_cfg_scale=4.0, use guidance='nag' (negatives inside "
            "attention, one evaluation per step), or leave the negative out."
        )
        if strict:
            raise ValueError(message)
        logger.warning(message)
    return true_cfg_scale > 1 and negative


def flow_shift(pipe: DiffusionPipeline, image_seq_len: int, default_max_shift: float) -> float:
    """``mu``, the resolution-dependent shift of a flow-matching schedule, from the scheduler's config (diffusers'
    `calculate_shift`; the default ``max_shift`` differs between families)."""
    config = pipe.scheduler.config
    return calculate_shift(
        image_seq_len=image_seq_len,
        base_seq_len=config.get("base_image_seq_len", 256),
        max_seq_len=config.get("max_image_seq_len", 4096),
        base_shift=config.get("base_shift", 0.5),
        max_shift=config.get("max_shift", default_max_shift),
    )


def flow_patch_context(
    pipe: DiffusionPipeline,
    latent_shape: tuple[int, ...],
    height: int,
    width: int,
    timesteps: torch.Tensor,
    pack: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> PatchContext:
    """The `PatchContext` of a flow-matching family (SD3, Flux): VAE latents shifted and scaled, packed into a
    row of tokens by ``pack`` where the network takes them so, and noised by the scheduler's ``scale_noise``."""
    network = pipe.transformer

    def encode_image(image: PIL.Image.Image) -> torch.Tensor:
        pixels = pipe.image_processor.preprocess(image=image.convert("RGB"), height=height, width=width)
        pixels = pixels.to(device=get_module_execution_device(pipe.vae), dtype=pipe.vae.dtype)
        latents = pipe.vae.encode(pixels).latent_dist.mode()
        latents = (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        latents = latents.to(device=pipe._execution_device, dtype=network.dtype)
        return (latents if pack is None else pack(latents))[0]

    def add_noise(latents: torch.Tensor, noise: torch.Tensor, step: Step) -> torch.Tensor:
        return pipe.scheduler.scale_noise(sample=latents, timestep=timesteps[step.index : step.index + 1], noise=noise)

    return PatchContext(tuple(latent_shape), encode_image, add_noise)


def decode_flow_latents(pipe: DiffusionPipeline, latents: torch.Tensor, output_type: str) -> Any:
    """Images from unpacked flow-matching latents (SD3, Flux): un-scale, un-shift, decode, post-process."""
    if output_type == "latent":
        return latents
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents.to(get_module_execution_device(pipe.vae)), return_dict=False)[0]
    return pipe.image_processor.postprocess(image=image, output_type=output_type)
