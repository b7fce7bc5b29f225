"""A randomly initialised IP-Adapter for a tiny UNet, built the way diffusers' own tests build one, and image
embeddings whose rows tell positive from negative."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor
from diffusers.models.embeddings import ImageProjection


def load_ip_adapter(unet: UNet2DConditionModel) -> None:
    """Random IP-Adapter weights (4 image tokens) loaded into ``unet`` with diffusers' own loader."""
    torch.manual_seed(0)
    cross_attention = {}
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden_size = unet.config.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden_size = list(reversed(unet.config.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden_size = unet.config.block_out_channels[int(name[len("down_blocks.")])]
        weights = IPAdapterAttnProcessor(
            hidden_size=hidden_size, cross_attention_dim=unet.config.cross_attention_dim, scale=1.0
        ).state_dict()
        cross_attention[f"{key}.to_k_ip.weight"] = weights["to_k_ip.0.weight"]
        cross_attention[f"{key}.to_v_ip.weight"] = weights["to_v_ip.0.weight"]
        key += 2
    dim = unet.config.cross_attention_dim
    projection = ImageProjection(cross_attention_dim=dim, image_embed_dim=dim, num_image_text_embeds=4).state_dict()
    image_proj = {
        "proj.weight": projection["image_embeds.weight"],
        "proj.bias": projection["image_embeds.bias"],
        "norm.weight": projection["norm.weight"],
        "norm.bias": projection["norm.bias"],
    }
    unet._load_ip_adapter_weights([{"image_proj": image_proj, "ip_adapter": cross_attention}])


def signed_embeds(dim: int) -> list[torch.Tensor]:
    """``ip_adapter_image_embeds`` for CFG, ``[negative; positive]``: the negative row all -1, the positive all +1."""
    return [torch.cat([-torch.ones(1, 1, dim), torch.ones(1, 1, dim)])]
