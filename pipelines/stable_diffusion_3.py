"""Stable Diffusion 3 / 3.5 with negguide's guidance modules.

Importable as ``negguide.pipelines.stable_diffusion_3``, and loadable on its own as a diffusers custom
pipeline::

    DiffusionPipeline.from_pretrained(folder, custom_pipeline="<repo>/pipelines/stable_diffusion_3.py",
                                      trust_remote_code=True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.stable_diffusion_3.pipeline_output import StableDiffusion3PipelineOutput
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import retrieve_timesteps

from negguide import checks
from negguide.branches import Text
from negguide.core import Denoiser, Fields, Guide
from negguide.family import (
    Callback,
    cache_contexts,
    call_info,
    callback_inputs,
    decode_flow_latents,
    denoising_loop,
    encoder_columns,
    flow_patch_context,
    flow_shift,
    given_conditions,
    ip_adapter_conditions,
    patched,
)
from negguide.image_conditions import adapter_list
from negguide.memory import MemoryBudget
from negguide.modules.resolve import GuidanceArg
from negguide.postprocess import SkipLayerGuidance


class StableDiffusion3NegGuidePipeline(StableDiffusion3Pipeline):
    """diffusers' `StableDiffusion3Pipeline` with one more call argument, ``guidance=``.

    Build it like the stock pipeline (``from_pretrained``, ``from_single_file``) or convert a loaded one
    without copying weights: ``StableDiffusion3NegGuidePipeline.from_pipe(stock_pipe)``.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        prompt_3: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        negative_prompt_3: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image: PipelineImageInput | None = None,
        ip_adapter_image_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 256,
        skip_guidance_layers: list[int] | None = None,
        skip_layer_guidance_scale: float = 2.8,
        skip_layer_guidance_stop: float = 0.2,
        skip_layer_guidance_start: float = 0.01,
        mu: float | None = None,
        guidance: GuidanceArg = None,
        memory_budget: MemoryBudget = None,
    ) -> StableDiffusion3PipelineOutput | tuple:
        r"""Generate images; the arguments are diffusers' `StableDiffusion3Pipeline.__call__` arguments, plus:

        Args:
            guidance (`GuidanceModule`, `str`, or a list of them, *optional*):
                How negatives act: a combiner such as ``NegativePrompts([Negative("blurry", start=0.2)])`` or
                ``PerpNeg(["blurry"])``, any number of patchers, or a registry name that builds the module from
                ``negative_prompt``. ``None`` is diffusers' standard guidance, output for output. Patchers see the
                image tokens of the transformer's attention outputs only, never the text tokens; NegToMe's default
                layers are the joint blocks (``NegToMe(layers=...)`` picks others by name).
            memory_budget (`int` or `str`, *optional*):
                The memory one network evaluation may use: bytes, a size such as ``"6GB"``, or ``"auto"`` (the
                device's free memory). A step's rows (every branch of every image) that would need more run in the
                fewest chunks that fit, with the same result; the first evaluation of a row shape measures what a
                row needs (`negguide.memory`). ``None`` (the default): one evaluation per step, as diffusers.

        Skip-layer guidance (``skip_guidance_layers``, SD 3.5) runs as in diffusers: after guidance, at the steps
        of its window, one more evaluation of the prompt's rows with those layers skipped, under every module.
        IP-Adapter image embeddings condition the prompt's branch; every other branch (the empty-prompt baseline,
        negatives, Perp-Neg's rows) takes the negative ones (zeros, or the first half of given embeddings).

        Differences from the stock pipeline:

        * a single string ``negative_prompt`` serves a list of prompts; ``prompt_2``, ``prompt_3`` and their
          negative lists must hold one text per prompt;
        * numeric arguments are checked before any network runs (steps, scales, sizes, generators);
        * ``clip_skip`` applies to every text (diffusers applies it to the prompt only);
        * step-end callbacks see the conditioning rows of the step's batch, in batch order; embeddings they
          return are not used, while ``latents`` and ``pipe._guidance_scale`` changes are honoured.

        Returns:
            `StableDiffusion3PipelineOutput` or ``(images,)``.
        """
        callback_names = callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        factor = self.vae_scale_factor * self.patch_size
        default_size = self.default_sample_size * self.vae_scale_factor
        height = checks.image_size(default_size if height is None else height, "height", factor)
        width = checks.image_size(default_size if width is None else width, "width", factor)
        self.check_inputs(
            prompt=prompt,
            prompt_2=prompt_2,
            prompt_3=prompt_3,
            height=height,
            width=width,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            negative_prompt_3=negative_prompt_3,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            callback_on_step_end_tensor_inputs=callback_names,
            max_sequence_length=max_sequence_length,
        )
        self._guidance_scale = guidance_scale
        self._clip_skip = clip_skip
        self._joint_attention_kwargs = joint_attention_kwargs
        self._interrupt = False
        device = self._execution_device
        dtype = self.text_encoder.dtype if self.text_encoder is not None else self.transformer.dtype

        call = call_info(
            (prompt, prompt_2, prompt_3),
            (negative_prompt, negative_prompt_2, negative_prompt_3),
            prompt_embeds,
            negative_prompt_embeds,
            num_images_per_prompt,
        )
        checks.call_numbers(
            num_inference_steps=num_inference_steps,
            scales={"guidance_scale": guidance_scale, "skip_layer_guidance_scale": skip_layer_guidance_scale},
            generator=generator,
            num_images=call.num_images,
            schedule_given=sigmas is not None,
        )
        skip_layers = self._skip_layer_guidance(
            skip_guidance_layers, skip_layer_guidance_scale, skip_layer_guidance_start, skip_layer_guidance_stop
        )
        latents = self.prepare_latents(
            batch_size=call.num_images,
            num_channels_latents=self.transformer.config.in_channels,
            height=height,
            width=width,
            dtype=dtype,
            device=device,
            generator=generator,
            latents=latents,
        )
        patch_size = self.transformer.config.patch_size
        num_image_tokens = (latents.shape[2] // patch_size) * (latents.shape[3] // patch_size)
        if mu is None and self.scheduler.config.get("use_dynamic_shifting", None):
            mu = flow_shift(self, num_image_tokens, default_max_shift=1.16)
        timesteps, num_inference_steps = retrieve_timesteps(
            scheduler=self.scheduler,
            num_inference_steps=num_inference_steps,
            device=device,
            sigmas=sigmas,
            **({} if mu is None else {"mu": mu}),
        )
        given = given_conditions(
            prompt_embeds,
            pooled_prompt_embeds,
            negative_prompt_embeds,
            negative_pooled_prompt_embeds,
            pooled_field="pooled_projections",
            device=device,
            dtype=dtype,
        )
        guide = Guide(
            guidance,
            call=call,
            timesteps=timesteps.tolist(),
            encode=self._text_encoding(device, max_sequence_length),
            given=given,
            negative_prompt=negative_prompt,
            refinements=() if skip_layers is None else (skip_layers,),
            forward_context=cache_contexts(self.transformer),
            memory_budget=memory_budget,
        )
        if (ip_adapter_image is not None and self.is_ip_adapter_active) or ip_adapter_image_embeds is not None:
            guide.image_conditions = ip_adapter_conditions(
                self,
                ip_adapter_image,
                ip_adapter_image_embeds,
                call=call,
                guided=self.do_classifier_free_guidance,
                device=device,
                field="ip_adapter_image_embeds",
            )

        context = flow_patch_context(self, latents.shape[1:], height, width, timesteps)
        with patched(guide, self.transformer, context, num_image_tokens):
            latents = denoising_loop(
                self,
                guide,
                latents,
                timesteps,
                num_inference_steps,
                denoiser=lambda t: self._denoiser(t),
                guidance=lambda: (self.guidance_scale, self.do_classifier_free_guidance),
                callback=callback_on_step_end,
                callback_names=callback_names,
                callback_tensors=lambda latents, fields, _: {
                    "latents": latents,
                    "prompt_embeds": fields["encoder_hidden_states"],
                    "pooled_prompt_embeds": fields["pooled_projections"],
                },
            )

        image = decode_flow_latents(self, latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return StableDiffusion3PipelineOutput(images=image)

    def _text_encoding(self, device: torch.device, max_sequence_length: int) -> Callable[[list[Text]], Fields]:
        """The call's text encoder: diffusers' `encode_prompt` with its two CLIP encoders and T5."""
        lora_scale = (self.joint_attention_kwargs or {}).get("scale")

        def encode(texts: list[Text]) -> Fields:
            prompt, prompt_2, prompt_3 = encoder_columns(texts, 3)
            embeds, _, pooled, _ = self.encode_prompt(
                prompt,
                prompt_2,
                prompt_3,
                device=device,
                do_classifier_free_guidance=False,
                clip_skip=self.clip_skip,
                max_sequence_length=max_sequence_length,
                lora_scale=lora_scale,
            )
            return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

        return encode

    def _skip_layer_guidance(
        self, layers: list[int] | None, scale: float, start: float, stop: float
    ) -> SkipLayerGuidance | None:
        """The call's skip-layer guidance (``None`` without ``skip_guidance_layers``), its arguments checked."""
        if layers is None:
            return None
        num_layers = self.transformer.config.num_layers
        if not isinstance(layers, (list, tuple)) or not all(
            isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < num_layers for layer in layers
        ):
            raise ValueError(
                f"`skip_guidance_layers` must be a list of layer indices in [0, {num_layers}), got {layers!r}."
            )
        start, stop = (
            checks.unit_interval(start, "skip_layer_guidance_start"),
            checks.unit_interval(stop, "skip_layer_guidance_stop"),
        )
        return SkipLayerGuidance(
            denoiser=lambda step: self._denoiser(self.scheduler.timesteps[step.index], skip_layers=list(layers)),
            scale=scale,
            start=start,
            stop=stop,
        )

    def _denoiser(self, t: torch.Tensor, skip_layers: list[int] | None = None) -> Denoiser:
        """The transformer at timestep ``t``, for any number of rows; ``skip_layers`` are left out of the run."""

        def denoise(rows: torch.Tensor, fields: Fields) -> torch.Tensor:
            image_embeds = adapter_list(fields, "ip_adapter_image_embeds")
            attention_kwargs = dict(self.joint_attention_kwargs or {})
            if image_embeds is not None:
                attention_kwargs["ip_adapter_image_embeds"] = image_embeds[0]
            return self.transformer(
                hidden_states=rows,
                timestep=t.expand(len(rows)),
                encoder_hidden_states=fields["encoder_hidden_states"],
                pooled_projections=fields["pooled_projections"],
                joint_attention_kwargs=attention_kwargs or None,
                return_dict=False,
                **({} if skip_layers is None else {"skip_layers": skip_layers}),
            )[0]

        return denoise
