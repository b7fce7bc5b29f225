"""Stable Diffusion 1.x / 2.x with negguide's guidance modules.

Importable as ``negguide.pipelines.stable_diffusion``, and loadable on its own as a diffusers custom
pipeline::

    DiffusionPipeline.from_pretrained(folder, custom_pipeline="<repo>/pipelines/stable_diffusion.py",
                                      trust_remote_code=True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import PIL.Image
import torch
from diffusers import StableDiffusionPipeline
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.stable_diffusion.pipeline_output import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

from negguide import checks
from negguide.branches import CallInfo, Step, TextKey
from negguide.core import Fields, Guide, embeds_conditions
from negguide.family import (
    Callback,
    cache_contexts,
    callback_inputs,
    denoising_loop,
    ip_adapter_conditions,
    patched,
    true_cfg,
)
from negguide.image_conditions import adapter_list
from negguide.memory import MemoryBudget
from negguide.modules.base import PatchContext
from negguide.modules.resolve import GuidanceArg


class StableDiffusionNegGuidePipeline(StableDiffusionPipeline):
    """diffusers' `StableDiffusionPipeline` with one more call argument, ``guidance=``.

    Build it like the stock pipeline (``from_pretrained``, ``from_single_file``) or convert a loaded one
    without copying weights: ``StableDiffusionNegGuidePipeline.from_pipe(stock_pipe)``.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: list[int] | None = None,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image: PipelineImageInput | None = None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        callback_on_step_end: Callback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        true_cfg_scale: float = 1.0,
        guidance: GuidanceArg = None,
        memory_budget: MemoryBudget = None,
    ) -> StableDiffusionPipelineOutput | tuple:
        r"""Generate images; the arguments are diffusers' `StableDiffusionPipeline.__call__` arguments, plus:

        Args:
            true_cfg_scale (`float`, defaults to 1.0):
                For guidance-distilled UNets only (a config with ``time_cond_proj_dim``, such as LCM students or
                ``"shapes-world-distilled"``): the scale of true classifier-free guidance, which negatives need on
                such a model. ``guidance_scale`` stays the network's own, embedded, scale (one evaluation per step);
                with ``true_cfg_scale > 1`` and a negative, every step also evaluates the negative branches and the
                combiner mixes them with this scale. A negative with ``true_cfg_scale <= 1`` raises a ValueError
                instead of being ignored, unless a patcher such as `NAG` takes it (``guidance="nag"``).
            guidance (`GuidanceModule`, `str`, or a list of them, *optional*):
                How negatives act: a combiner such as ``NegativePrompts([Negative("blurry", start=0.2)])``,
                any number of patchers, or a registry name (``"negative_prompts"``, ``"nag"``) that builds the
                module from ``negative_prompt``. ``None`` is diffusers' standard guidance, output for output.
            memory_budget (`int` or `str`, *optional*):
                The memory one network evaluation may use: bytes, a size such as ``"6GB"``, or ``"auto"`` (the
                device's free memory). A step's rows (every branch of every image) that would need more run in the
                fewest chunks that fit, with the same result; the first evaluation of a row shape measures what a
                row needs (`negguide.memory`). ``None`` (the default): one evaluation per step, as diffusers.

        IP-Adapter inputs condition every branch: the prompt's branch takes the image embeddings, every other
        branch (the empty-prompt baseline, negatives, Perp-Neg's rows) the negative ones (zeros, or the first half
        of ``ip_adapter_image_embeds`` given for CFG, as in diffusers).

        Differences from the stock pipeline:

        * a single string ``negative_prompt`` serves a list of prompts;
        * numeric arguments are checked before any network runs (steps, scales, sizes, generators);
        * ``clip_skip`` applies to every text (diffusers applies it to the prompt only);
        * ``prompt_embeds`` in ``callback_on_step_end`` holds the text rows of the step's batch, in batch
          order, as in diffusers; embeddings a callback returns are not used (each step's batch is rebuilt
          from its branches), while ``latents`` and ``pipe._guidance_scale`` changes are honoured;
        * on a guidance-distilled UNet a negative is refused without ``true_cfg_scale`` (stock ignores it).

        Returns:
            `StableDiffusionPipelineOutput` or ``(images, nsfw_content_detected)``.
        """
        callback_names = callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        sample_size = self.unet.config.sample_size
        size = (sample_size, sample_size) if self._is_unet_config_sample_size_int else tuple(sample_size)
        height = checks.image_size(
            size[0] * self.vae_scale_factor if height is None else height, "height", self.vae_scale_factor
        )
        width = checks.image_size(
            size[1] * self.vae_scale_factor if width is None else width, "width", self.vae_scale_factor
        )
        self.check_inputs(
            prompt=prompt,
            height=height,
            width=width,
            callback_steps=None,
            negative_prompt=negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            ip_adapter_image=ip_adapter_image,
            ip_adapter_image_embeds=ip_adapter_image_embeds,
            callback_on_step_end_tensor_inputs=callback_names,
        )
        distilled = self.unet.config.time_cond_proj_dim is not None
        if not distilled and true_cfg_scale != 1.0:
            raise ValueError(
                f"`true_cfg_scale` ({true_cfg_scale}) is for guidance-distilled UNets (with `time_cond_proj_dim`); "
                "this UNet runs classifier-free guidance itself: set `guidance_scale` instead."
            )
        self._guidance_scale = guidance_scale
        self._guidance_rescale = guidance_rescale
        self._clip_skip = clip_skip
        self._cross_attention_kwargs = cross_attention_kwargs
        self._interrupt = False
        device = self._execution_device
        dtype = self.text_encoder.dtype if self.text_encoder is not None else self.unet.dtype

        call = CallInfo.from_call(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt)
        checks.call_numbers(
            num_inference_steps=num_inference_steps,
            scales={"guidance_scale": guidance_scale, "true_cfg_scale": true_cfg_scale, "eta": eta},
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
        guide = Guide(
            guidance,
            call=call,
            timesteps=timesteps.tolist(),
            encode=self._text_encoding(device),
            given=self._given_conditions(prompt_embeds, negative_prompt_embeds, device, dtype),
            negative_prompt=negative_prompt,
            guidance_rescale=guidance_rescale,
            forward_context=cache_contexts(self.unet),
            memory_budget=memory_budget,
        )
        if distilled:
            # An empty negative prompt asks for nothing here; stock Flux counts it, but this UNet has no baseline of
            # its own to replace.
            guided = true_cfg(guide.has_negatives or negative_prompt_embeds is not None, true_cfg_scale)
            guidance_now = lambda: (true_cfg_scale, guided)
        else:
            guidance_now = lambda: (self.guidance_scale, self.do_classifier_free_guidance)
        guide.image_conditions = ip_adapter_conditions(
            self,
            ip_adapter_image,
            ip_adapter_image_embeds,
            call=call,
            guided=guidance_now()[1],
            device=device,
            field="image_embeds",
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
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator=generator, eta=eta)
        timestep_cond = None
        if distilled:
            timestep_cond = self.get_guidance_scale_embedding(
                w=torch.tensor([self.guidance_scale - 1]), embedding_dim=self.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=latents.dtype)

        context = self._patch_context(latents.shape[1:], height, width, timesteps)
        with patched(guide, self.unet, context):
            latents = denoising_loop(
                self,
                guide,
                latents,
                timesteps,
                num_inference_steps,
                denoiser=lambda t: self._denoiser(t, timestep_cond),
                guidance=guidance_now,
                callback=callback_on_step_end,
                callback_names=callback_names,
                callback_tensors=lambda latents, fields, others: {
                    "latents": latents,
                    "prompt_embeds": fields["encoder_hidden_states"],
                    "negative_prompt_embeds": None if others is None else others["encoder_hidden_states"],
                },
                step_kwargs=extra_step_kwargs,
            )

        if output_type == "latent":
            image, has_nsfw_concept = latents, None
        else:
            image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
            image, has_nsfw_concept = self.run_safety_checker(image=image, device=device, dtype=dtype)
        do_denormalize = [True] * len(image) if has_nsfw_concept is None else [not nsfw for nsfw in has_nsfw_concept]
        image = self.image_processor.postprocess(image=image, output_type=output_type, do_denormalize=do_denormalize)
        self.maybe_free_model_hooks()

        if not return_dict:
            return image, has_nsfw_concept
        return StableDiffusionPipelineOutput(images=image, nsfw_content_detected=has_nsfw_concept)

    def _text_encoding(self, device: torch.device) -> Callable[[list[str]], Fields]:
        """The call's text encoder: diffusers' `encode_prompt` (textual inversion, LoRA scale, clip_skip)."""
        lora_scale = (self.cross_attention_kwargs or {}).get("scale")

        def encode(texts: list[str]) -> Fields:
            embeds, _ = self.encode_prompt(
                prompt=texts,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                lora_scale=lora_scale,
                clip_skip=self.clip_skip,
            )
            return {"encoder_hidden_states": embeds}

        return encode

    @staticmethod
    def _given_conditions(
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[TextKey, Fields]:
        given: dict[TextKey, Fields] = {}
        for source, embeds in (("prompt_embeds", prompt_embeds), ("negative_prompt_embeds", negative_prompt_embeds)):
            if embeds is not None:
                given.update(embeds_conditions(source, encoder_hidden_states=embeds.to(device=device, dtype=dtype)))
        return given

    def _patch_context(
        self, latent_shape: tuple[int, ...], height: int, width: int, timesteps: torch.Tensor
    ) -> PatchContext:
        """What the patchers may use: the latent shape, the VAE encoder and the scheduler's noising."""

        def encode_image(image: PIL.Image.Image) -> torch.Tensor:
            pixels = self.image_processor.preprocess(image=image.convert("RGB"), height=height, width=width)
            pixels = pixels.to(device=self._execution_device, dtype=self.vae.dtype)
            latents = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
            return latents[0].to(self.unet.dtype)

        def add_noise(latents: torch.Tensor, noise: torch.Tensor, step: Step) -> torch.Tensor:
            return self.scheduler.add_noise(
                original_samples=latents, noise=noise, timesteps=timesteps[step.index : step.index + 1]
            )

        return PatchContext(tuple(latent_shape), encode_image, add_noise)

    def _denoiser(
        self, t: torch.Tensor, timestep_cond: torch.Tensor | None
    ) -> Callable[[torch.Tensor, Fields], torch.Tensor]:
        """The UNet at timestep ``t``, for any number of rows."""

        def denoise(rows: torch.Tensor, fields: Fields) -> torch.Tensor:
            image_embeds = adapter_list(fields, "image_embeds")
            return self.unet(
                sample=self.scheduler.scale_model_input(sample=rows, timestep=t),
                timestep=t,
                encoder_hidden_states=fields["encoder_hidden_states"],
                timestep_cond=None if timestep_cond is None else timestep_cond.expand(len(rows), -1),
                cross_attention_kwargs=self.cross_attention_kwargs,
                added_cond_kwargs=None if image_embeds is None else {"image_embeds": image_embeds},
                return_dict=False,
            )[0]

        return denoise
