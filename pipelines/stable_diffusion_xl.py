"""Stable Diffusion XL with negguide's guidance modules.

Importable as ``negguide.pipelines.stable_diffusion_xl``, and loadable on its own as a diffusers custom
pipeline::

    DiffusionPipeline.from_pretrained(folder, custom_pipeline="<repo>/pipelines/stable_diffusion_xl.py",
                                      trust_remote_code=True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import PIL.Image
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import retrieve_timesteps
from diffusers.utils.torch_utils import get_module_execution_device

from negguide import checks
from negguide.branches import Step, Text
from negguide.core import Denoiser, Fields, Guide
from negguide.family import (
    Callback,
    cache_contexts,
    call_info,
    callback_inputs,
    denoising_loop,
    encoder_columns,
    given_conditions,
    ip_adapter_conditions,
    patched,
)
from negguide.image_conditions import ImageConditions, adapter_list
from negguide.memory import MemoryBudget
from negguide.modules.base import PatchContext
from negguide.modules.resolve import GuidanceArg


class StableDiffusionXLNegGuidePipeline(StableDiffusionXLPipeline):
    """diffusers' `StableDiffusionXLPipeline` with one more call argument, ``guidance=``.

    Build it like the stock pipeline (``from_pretrained``, ``from_single_file``) or convert a loaded one
    without copying weights: ``StableDiffusionXLNegGuidePipeline.from_pipe(stock_pipe)``.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        denoising_end: float | None = None,
        guidance_scale: float = 5.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image: PipelineImageInput | None = None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        original_size: tuple[int, int] | None = None,
        crops_coords_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
        negative_original_size: tuple[int, int] | None = None,
        negative_crops_coords_top_left: tuple[int, int] = (0, 0),
        negative_target_size: tuple[int, int] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        guidance: GuidanceArg = None,
        memory_budget: MemoryBudget = None,
    ) -> StableDiffusionXLPipelineOutput | tuple:
        r"""Generate images; the arguments are diffusers' `StableDiffusionXLPipeline.__call__` arguments, plus:

        Args:
            guidance (`GuidanceModule`, `str`, or a list of them, *optional*):
                How negatives act: a combiner such as ``NegativePrompts([Negative("blurry", start=0.2)])`` or
                ``PerpNeg(["blurry"])``, any number of patchers (``NegToMe()``: its default layers, the UNet's
                ``up_blocks`` attention, are the paper's SDXL choice), or a registry name that builds the module
                from ``negative_prompt``. ``None`` is diffusers' standard guidance, output for output.
            memory_budget (`int` or `str`, *optional*):
                The memory one network evaluation may use: bytes, a size such as ``"6GB"``, or ``"auto"`` (the
                device's free memory). A step's rows (every branch of every image) that would need more run in the
                fewest chunks that fit, with the same result; the first evaluation of a row shape measures what a
                row needs (`negguide.memory`). ``None`` (the default): one evaluation per step, as diffusers.

        What stock gives its unconditional half, every branch other than the prompt's gets here (the empty-prompt
        baseline, negatives, Perp-Neg's rows): the negative micro-conditioning (``negative_original_size``,
        ``negative_crops_coords_top_left``, ``negative_target_size``, used when both sizes are given, as in
        diffusers) and the negative IP-Adapter image embeddings (zeros, or the first half of
        ``ip_adapter_image_embeds`` given for CFG).

        Differences from the stock pipeline:

        * a single string ``negative_prompt`` serves a list of prompts; ``prompt_2`` and ``negative_prompt_2``
          lists must hold one text per prompt;
        * numeric arguments are checked before any network runs (steps, scales, sizes, generators);
        * with several images, stock repeats the (negative, positive) pair of micro-conditioning time ids along its
          whole batch, so half of its unconditional rows get the positive ones; here every row gets its branch's;
        * where the model's config sets ``force_zeros_for_empty_prompt`` (SDXL base), the empty prompt is the
          zero embedding wherever it conditions a branch (diffusers zeroes it only when ``negative_prompt`` is
          left out), and a ``negative_prompt_2`` given without ``negative_prompt`` is used, not dropped;
        * ``clip_skip`` applies to every text (diffusers applies it to the prompt only);
        * step-end callbacks see the conditioning rows of the step's batch, in batch order; embeddings they
          return are not used, while ``latents`` and ``pipe._guidance_scale`` changes are honoured.

        Returns:
            `StableDiffusionXLPipelineOutput` or ``(images,)``.
        """
        callback_names = callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        default_size = self.default_sample_size * self.vae_scale_factor
        height = checks.image_size(default_size if height is None else height, "height", self.vae_scale_factor)
        width = checks.image_size(default_size if width is None else width, "width", self.vae_scale_factor)
        self.check_inputs(
            prompt=prompt,
            prompt_2=prompt_2,
            height=height,
            width=width,
            callback_steps=None,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            ip_adapter_image=ip_adapter_image,
            ip_adapter_image_embeds=ip_adapter_image_embeds,
            callback_on_step_end_tensor_inputs=callback_names,
        )
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._denoising_end = denoising_end
        self._interrupt = False
        device = self._execution_device
        dtype = self.text_encoder_2.dtype if self.text_encoder_2 is not None else self.unet.dtype

        call = call_info(
            (prompt, prompt_2),
            (negative_prompt, negative_prompt_2),
            prompt_embeds,
            negative_prompt_embeds,
            num_images_per_prompt,
        )
        checks.call_numbers(
            num_inference_steps=num_inference_steps,
            scales={"guidance_scale": guidance_scale, "eta": eta},
            generator=generator,
            num_images=call.num_images,
            schedule_given=timesteps is not None or sigmas is not None,
        )
        timesteps, num_inference_steps = retrieve_timesteps(
            scheduler=self.scheduler,
            num_inference_steps=num_inference_steps,
            device=device,
            timesteps=timesteps,
            sigmas=sigmas,
        )
        timesteps, num_inference_steps = self._until_denoising_end(timesteps, num_inference_steps)
        given = given_conditions(
            prompt_embeds,
            pooled_prompt_embeds,
            negative_prompt_embeds,
            negative_pooled_prompt_embeds,
            pooled_field="text_embeds",
            device=device,
            dtype=dtype,
        )
        guide = Guide(
            guidance,
            call=call,
            timesteps=timesteps.tolist(),
            encode=self._text_encoding(device),
            given=given,
            negative_prompt=negative_prompt,
            guidance_rescale=guidance_rescale,
            forward_context=cache_contexts(self.unet),
            memory_budget=memory_budget,
        )

        latents = self.prepare_latents(
            batch_size=call.num_images,
            num_channels_latents=self.unet.config.in_channels,
            height=height,
            width=width,
            dtype=dtype,
            device=device,
            generator=generator,
            latents=latents,
        )
        projection_dim = (
            self.text_encoder_2.config.projection_dim
            if self.text_encoder_2 is not None
            else int(pooled_prompt_embeds.shape[-1])
        )
        time_ids = self._get_add_time_ids(
            original_size=original_size or (height, width),
            crops_coords_top_left=crops_coords_top_left,
            target_size=target_size or (height, width),
            dtype=dtype,
            text_encoder_projection_dim=projection_dim,
        ).to(device)
        negative_time_ids = time_ids
        if negative_original_size is not None and negative_target_size is not None:
            negative_time_ids = self._get_add_time_ids(
                original_size=negative_original_size,
                crops_coords_top_left=negative_crops_coords_top_left,
                target_size=negative_target_size,
                dtype=dtype,
                text_encoder_projection_dim=projection_dim,
            ).to(device)
        guide.image_conditions = ImageConditions.merged(
            ImageConditions(
                {"time_ids": time_ids.expand(call.num_images, -1)},
                {"time_ids": negative_time_ids.expand(call.num_images, -1)},
            ),
            ip_adapter_conditions(
                self,
                ip_adapter_image,
                ip_adapter_image_embeds,
                call=call,
                guided=self.do_classifier_free_guidance,
                device=device,
                field="image_embeds",
            ),
        )
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            timestep_cond = self.get_guidance_scale_embedding(
                w=torch.tensor([self.guidance_scale - 1]), embedding_dim=self.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=latents.dtype)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(0)

        context = self._patch_context(latents.shape[1:], height, width, timesteps)
        with patched(guide, self.unet, context):
            latents = denoising_loop(
                self,
                guide,
                latents,
                timesteps,
                num_inference_steps,
                denoiser=self._denoiser(timestep_cond),
                guidance=lambda: (self.guidance_scale, self.do_classifier_free_guidance),
                callback=callback_on_step_end,
                callback_names=callback_names,
                callback_tensors=lambda latents, fields, _: {
                    "latents": latents,
                    "prompt_embeds": fields["encoder_hidden_states"],
                    "add_text_embeds": fields["text_embeds"],
                    "add_time_ids": fields["time_ids"],
                },
                step_kwargs=self.prepare_extra_step_kwargs(generator=generator, eta=eta),
            )

        image = self._decode(latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return StableDiffusionXLPipelineOutput(images=image)

    def _until_denoising_end(self, timesteps: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, int]:
        """The timesteps before ``denoising_end`` (a fraction of the schedule, for refiner hand-offs), and their
        number."""
        end = self.denoising_end
        if not isinstance(end, float) or not 0 < end < 1:
            return timesteps, num_steps
        num_train = self.scheduler.config.num_train_timesteps
        num_steps = int((timesteps >= round(num_train - end * num_train)).sum())
        return timesteps[:num_steps], num_steps

    def _text_encoding(self, device: torch.device) -> Callable[[list[Text]], Fields]:
        """The call's text encoder: diffusers' `encode_prompt` with both encoders; the empty prompt is the zero
        embedding where the config's ``force_zeros_for_empty_prompt`` says so."""
        lora_scale = (self.cross_attention_kwargs or {}).get("scale")

        def encode(texts: list[Text]) -> Fields:
            prompt, prompt_2 = encoder_columns(texts, 2)
            embeds, _, pooled, _ = self.encode_prompt(
                prompt=prompt,
                prompt_2=prompt_2,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                lora_scale=lora_scale,
                clip_skip=self.clip_skip,
            )
            fields = {"encoder_hidden_states": embeds, "text_embeds": pooled}
            if not (self.config.force_zeros_for_empty_prompt and "" in texts):
                return fields
            empty = torch.tensor([text == "" for text in texts], device=embeds.device)
            return {name: torch.where(empty.view(-1, *[1] * (t.ndim - 1)), 0.0, t) for name, t in fields.items()}

        return encode

    def _denoiser(self, timestep_cond: torch.Tensor | None) -> Callable[[torch.Tensor], Denoiser]:
        """The UNet at a timestep, for any number of rows."""

        def at(t: torch.Tensor) -> Denoiser:
            def denoise(rows: torch.Tensor, fields: Fields) -> torch.Tensor:
                added = {"text_embeds": fields["text_embeds"], "time_ids": fields["time_ids"]}
                image_embeds = adapter_list(fields, "image_embeds")
                if image_embeds is not None:
                    added["image_embeds"] = image_embeds
                return self.unet(
                    sample=self.scheduler.scale_model_input(sample=rows, timestep=t),
                    timestep=t,
                    encoder_hidden_states=fields["encoder_hidden_states"],
                    timestep_cond=None if timestep_cond is None else timestep_cond.expand(len(rows), -1),
                    cross_attention_kwargs=self.cross_attention_kwargs,
                    added_cond_kwargs=added,
                    return_dict=False,
                )[0]

            return denoise

        return at

    @contextmanager
    def _vae_in_float32_if_needed(self) -> Iterator[None]:
        """fp16 SDXL VAEs whose config asks for it (``force_upcast``) run in float32, as in diffusers."""
        upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if upcast:
            self.vae.to(dtype=torch.float32)
        try:
            yield
        finally:
            if upcast:
                self.vae.to(dtype=torch.float16)

    def _latent_statistics(self, like: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The VAE config's per-channel latent mean and std, shaped to broadcast over ``like`` (0 and 1 without)."""
        config = self.vae.config
        if getattr(config, "latents_mean", None) is None or getattr(config, "latents_std", None) is None:
            return 0.0, 1.0
        shape = (1, -1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(like.device, like.dtype)
        return mean, torch.tensor(config.latents_std).view(shape).to(like.device, like.dtype)

    def _decode(self, latents: torch.Tensor, output_type: str) -> Any:
        if output_type == "latent":
            return latents
        with self._vae_in_float32_if_needed():
            latents = latents.to(device=get_module_execution_device(self.vae), dtype=self.vae.dtype)
            mean, std = self._latent_statistics(latents)
            image = self.vae.decode(latents * std / self.vae.config.scaling_factor + mean, return_dict=False)[0]
        if self.watermark is not None:
            image = self.watermark.apply_watermark(images=image)
        return self.image_processor.postprocess(image=image, output_type=output_type)

    def _patch_context(
        self, latent_shape: tuple[int, ...], height: int, width: int, timesteps: torch.Tensor
    ) -> PatchContext:
        """What the patchers may use: the latent shape, the VAE encoder and the scheduler's noising."""

        def encode_image(image: PIL.Image.Image) -> torch.Tensor:
            pixels = self.image_processor.preprocess(image=image.convert("RGB"), height=height, width=width)
            with self._vae_in_float32_if_needed():
                pixels = pixels.to(device=get_module_execution_device(self.vae), dtype=self.vae.dtype)
                latents = self.vae.encode(pixels).latent_dist.mode()
                mean, std = self._latent_statistics(latents)
                latents = (latents - mean) * self.vae.config.scaling_factor / std
            return latents[0].to(device=self._execution_device, dtype=self.unet.dtype)

        def add_noise(latents: torch.Tensor, noise: torch.Tensor, step: Step) -> torch.Tensor:
            return self.scheduler.add_noise(
                original_samples=latents, noise=noise, timesteps=timesteps[step.index : step.index + 1]
            )

        return PatchContext(tuple(latent_shape), encode_image, add_noise)
