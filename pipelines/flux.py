"""Flux with negguide's guidance modules.

Importable as ``negguide.pipelines.flux``, and loadable on its own as a diffusers custom pipeline::

    DiffusionPipeline.from_pretrained(folder, custom_pipeline="<repo>/pipelines/flux.py", trust_remote_code=True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.image_processor import PipelineImageInput
from diffusers.pipelines.flux.pipeline_flux import retrieve_timesteps
from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput

from negguide import checks
from negguide.branches import CallInfo, Text
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
    patched,
    true_cfg,
)
from negguide.image_conditions import ImageConditions, adapter_fields, adapter_list, per_image
from negguide.memory import MemoryBudget
from negguide.modules.resolve import GuidanceArg


class FluxNegGuidePipeline(FluxPipeline):
    """diffusers' `FluxPipeline` with one more call argument, ``guidance=``.

    Flux-dev and Flux-schnell are guidance-distilled: ``guidance_scale`` is an input of the network (embedded
    guidance), and one evaluation per step makes an image. Negatives need *true* classifier-free guidance, the
    stock pipeline's ``true_cfg_scale``: every step evaluates the prompt and each negative branch, in one batched
    forward. With standard negatives that is 2 rows per image instead of 1 (about twice the time per step),
    with Perp-Neg and ``k`` negatives ``2 + k``; NegToMe alone adds no evaluation.

    Build it like the stock pipeline (``from_pretrained``, ``from_single_file``) or convert a loaded one
    without copying weights: ``FluxNegGuidePipeline.from_pipe(stock_pipe)``.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        true_cfg_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        sigmas: list[float] | None = None,
        guidance_scale: float = 3.5,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        ip_adapter_image: PipelineImageInput | None = None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        negative_ip_adapter_image: PipelineImageInput | None = None,
        negative_ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        max_sequence_length: int = 512,
        guidance: GuidanceArg = None,
        memory_budget: MemoryBudget = None,
    ) -> FluxPipelineOutput | tuple:
        r"""Generate images; the arguments are diffusers' `FluxPipeline.__call__` arguments, plus:

        Args:
            guidance (`GuidanceModule`, `str`, or a list of them, *optional*):
                How negatives act: a combiner such as ``NegativePrompts([Negative("blurry", start=0.2)])`` or
                ``PerpNeg(["blurry"])``, any number of patchers, or a registry name that builds the module from
                ``negative_prompt``. ``None`` is the stock pipeline's true CFG, output for output. The combiner's
                scale is ``true_cfg_scale``; ``guidance_scale`` stays the network's embedded guidance. Patchers see
                the image tokens of the transformer's attention outputs only, never the text tokens; NegToMe's
                default layers are the joint and single blocks, e.g. ``NegToMe(threshold=0.65, stop=0.1)``
                (the paper's Flux settings).
            memory_budget (`int` or `str`, *optional*):
                The memory one network evaluation may use: bytes, a size such as ``"6GB"``, or ``"auto"`` (the
                device's free memory). A step's rows (every branch of every image) that would need more run in the
                fewest chunks that fit, with the same result; the first evaluation of a row shape measures what a
                row needs (`negguide.memory`). ``None`` (the default): one evaluation per step, as diffusers.

        Guidance runs when ``true_cfg_scale > 1`` and there is something negative (a ``negative_prompt``, even
        ``""``, negative embeddings, or a module's own negatives), as in the stock pipeline. A negative with
        ``true_cfg_scale <= 1`` is ignored with a warning when ``guidance`` is left out (as in diffusers), and raises
        a ValueError when a guidance module is asked for.

        IP-Adapter image embeddings condition the prompt's branch; every other branch (the empty-prompt baseline,
        negatives, Perp-Neg's rows) takes the negative ones: ``negative_ip_adapter_image(_embeds)``, by default the
        embeddings of a black image, as in diffusers.

        Differences from the stock pipeline:

        * a single string ``negative_prompt`` serves a list of prompts; ``prompt_2`` and ``negative_prompt_2``
          lists must hold one text per prompt, and a ``negative_prompt_2`` alone is a negative too;
        * numeric arguments are checked before any network runs (steps, scales, sizes, generators);
        * the branches of a step run in one batched forward instead of one forward each; diffusers' cache hooks
          (FirstBlockCache, TaylorSeer, ...) therefore see one cache context per batched call (``"cond"``, or
          ``"uncond+cond"`` with a negative) where the stock pipeline has one per branch (``"cond"``, ``"uncond"``):
          a cache decides for all branches of a step at once;
        * step-end callbacks see the conditioning rows of the step's batch, in batch order; embeddings they
          return are not used, while ``latents`` changes are honoured;
        * Perp-Neg's ``patch_size`` needs unpacked latents and is refused.

        Returns:
            `FluxPipelineOutput` or ``(images,)``.
        """
        callback_names = callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        default_size = self.default_sample_size * self.vae_scale_factor
        height = checks.positive_int(default_size if height is None else height, "height")
        width = checks.positive_int(default_size if width is None else width, "width")
        self.check_inputs(
            prompt=prompt,
            prompt_2=prompt_2,
            height=height,
            width=width,
            negative_prompt=negative_prompt,
            negative_prompt_2=negative_prompt_2,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            callback_on_step_end_tensor_inputs=callback_names,
            max_sequence_length=max_sequence_length,
        )
        self._guidance_scale = guidance_scale
        self._joint_attention_kwargs = joint_attention_kwargs
        self._interrupt = False
        device = self._execution_device
        dtype = self.text_encoder_2.dtype if self.text_encoder_2 is not None else self.transformer.dtype

        call = call_info(
            (prompt, prompt_2),
            (negative_prompt, negative_prompt_2),
            prompt_embeds,
            negative_prompt_embeds,
            num_images_per_prompt,
        )
        checks.call_numbers(
            num_inference_steps=num_inference_steps,
            scales={"guidance_scale": guidance_scale, "true_cfg_scale": true_cfg_scale},
            generator=generator,
            num_images=call.num_images,
            schedule_given=sigmas is not None,
        )
        num_channels = self.transformer.config.in_channels // 4
        latents, image_ids = self.prepare_latents(
            batch_size=call.num_images,
            num_channels_latents=num_channels,
            height=height,
            width=width,
            dtype=dtype,
            device=device,
            generator=generator,
            latents=latents,
        )
        if sigmas is None and not self.scheduler.config.get("use_flow_sigmas", False):
            sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        timesteps, num_inference_steps = retrieve_timesteps(
            scheduler=self.scheduler,
            num_inference_steps=num_inference_steps,
            device=device,
            sigmas=sigmas,
            mu=flow_shift(self, latents.shape[1], default_max_shift=1.15),
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
            forward_context=cache_contexts(self.transformer),
            memory_budget=memory_budget,
        )
        guided = true_cfg(
            guide.has_negative(negative_prompt, negative_prompt_embeds), true_cfg_scale, strict=guidance is not None
        )
        given_both = prompt_embeds is not None and negative_prompt_embeds is not None
        if guided and given_both and prompt_embeds.shape != negative_prompt_embeds.shape:
            raise ValueError(
                "`prompt_embeds` and `negative_prompt_embeds` must have the same shape when passed directly, but got: "
                f"`prompt_embeds` {tuple(prompt_embeds.shape)} != `negative_prompt_embeds` "
                f"{tuple(negative_prompt_embeds.shape)}."
            )
        guide.image_conditions = self._ip_adapter_conditions(
            (ip_adapter_image, ip_adapter_image_embeds),
            (negative_ip_adapter_image, negative_ip_adapter_image_embeds),
            call=call,
            height=height,
            width=width,
            device=device,
        )
        embedded = None
        if self.transformer.config.guidance_embeds:
            embedded = torch.full([1], guidance_scale, device=device, dtype=torch.float32)
        self.scheduler.set_begin_index(0)

        height_in_latents = 2 * (int(height) // (self.vae_scale_factor * 2))
        width_in_latents = 2 * (int(width) // (self.vae_scale_factor * 2))
        context = flow_patch_context(
            self,
            (num_channels, height_in_latents, width_in_latents),
            height,
            width,
            timesteps,
            pack=lambda clean: self._pack_latents(
                latents=clean,
                batch_size=clean.shape[0],
                num_channels_latents=clean.shape[1],
                height=clean.shape[2],
                width=clean.shape[3],
            ),
        )
        with patched(guide, self.transformer, context, latents.shape[1]):
            latents = denoising_loop(
                self,
                guide,
                latents,
                timesteps,
                num_inference_steps,
                denoiser=self._denoiser(image_ids, embedded),
                guidance=lambda: (true_cfg_scale, guided),
                callback=callback_on_step_end,
                callback_names=callback_names,
                callback_tensors=lambda latents, fields, _: {
                    "latents": latents,
                    "prompt_embeds": fields["encoder_hidden_states"],
                },
            )

        if output_type != "latent":
            latents = self._unpack_latents(
                latents=latents, height=height, width=width, vae_scale_factor=self.vae_scale_factor
            )
        image = decode_flow_latents(self, latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return FluxPipelineOutput(images=image)

    def _ip_adapter_conditions(
        self,
        positive: tuple[PipelineImageInput | None, list[torch.Tensor] | None],
        negative: tuple[PipelineImageInput | None, list[torch.Tensor] | None],
        *,
        call: CallInfo,
        height: int,
        width: int,
        device: torch.device,
    ) -> ImageConditions | None:
        """IP-Adapter image embeddings, as the stock pipeline makes them: each of ``(image, embeds)`` and its negative
        left out while the other is given is a black image per adapter. The prompt's branch takes the positive
        embeddings, every other branch the negative ones."""
        if positive == (None, None) and negative == (None, None):
            return None
        black = [np.zeros((width, height, 3), dtype=np.uint8)] * self.transformer.encoder_hid_proj.num_ip_adapters
        fields = []
        for (image, embeds), prefix in ((positive, "ip_adapter"), (negative, "negative_ip_adapter")):
            if image is None and embeds is None:
                image = black
            tensors = self.prepare_ip_adapter_image_embeds(
                ip_adapter_image=image, ip_adapter_image_embeds=embeds, device=device, num_images_per_prompt=1
            )
            argument = f"{prefix}_image_embeds" if embeds is not None else f"{prefix}_image"
            per_images = [per_image(t, call.num_images, call.num_prompts, argument) for t in tensors]
            fields.append(adapter_fields("ip_adapter_image_embeds", per_images))
        return ImageConditions(*fields)

    def _text_encoding(self, device: torch.device, max_sequence_length: int) -> Callable[[list[Text]], Fields]:
        """The call's text encoder: diffusers' `encode_prompt` with CLIP (pooled) and T5 (per token)."""
        lora_scale = (self.joint_attention_kwargs or {}).get("scale")

        def encode(texts: list[Text]) -> Fields:
            prompt, prompt_2 = encoder_columns(texts, 2)
            embeds, pooled, _ = self.encode_prompt(
                prompt=prompt,
                prompt_2=prompt_2,
                device=device,
                max_sequence_length=max_sequence_length,
                lora_scale=lora_scale,
            )
            return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

        return encode

    def _denoiser(self, image_ids: torch.Tensor, embedded: torch.Tensor | None) -> Callable[[torch.Tensor], Denoiser]:
        """The transformer at a timestep, for any number of rows of packed latents; ``embedded`` is the embedded
        guidance scale (``None`` for networks without one)."""

        def at(t: torch.Tensor) -> Denoiser:
            def denoise(rows: torch.Tensor, fields: Fields) -> torch.Tensor:
                text = fields["encoder_hidden_states"]
                image_embeds = adapter_list(fields, "ip_adapter_image_embeds")
                attention_kwargs = dict(self.joint_attention_kwargs or {})
                if image_embeds is not None:
                    attention_kwargs["ip_adapter_image_embeds"] = image_embeds
                return self.transformer(
                    hidden_states=rows,
                    timestep=t.expand(len(rows)).to(rows.dtype) / 1000,
                    guidance=None if embedded is None else embedded.expand(len(rows)),
                    pooled_projections=fields["pooled_projections"],
                    encoder_hidden_states=text,
                    txt_ids=torch.zeros(text.shape[1], 3, device=text.device, dtype=image_ids.dtype),
                    img_ids=image_ids,
                    joint_attention_kwargs=attention_kwargs,
                    return_dict=False,
                )[0]

            return denoise

        return at
