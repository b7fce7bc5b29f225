"""Score distillation with Perp-Neg view guidance: optimise latent images of two views of one prompt.

    python examples/sds_perpneg.py [--model PATH] [--prompt "a red circle"] [--steps 20] [--guidance-scale 7.5]

A stand-in for a text-to-3D loop (DreamFusion, Poole et al., arXiv 2209.14988, with Perp-Neg's view
negatives, Armandpour et al., arXiv 2304.04968): instead of a 3D model rendered from cameras, a tensor of
latent images, one per camera azimuth (front and back by default), is pulled by `negguide.sds.perp_neg_sds`
towards its view of the prompt. Runs on any Stable Diffusion-style folder (``--model``; by default the
embedded shapes-world model), on CUDA when available. Prints the gradient norm and the distance the latents
have moved at every step; ``--save`` writes the decoded views to a PNG.
"""

from __future__ import annotations

import argparse

import torch

import negguide
from negguide.sds import perp_neg_sds
from negguide.views import VIEWS, view_embeddings, view_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="diffusers folder or hub id (default: the embedded model)")
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--azimuths", type=float, nargs="+", default=[0.0, 180.0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="about 100 for SDS on Stable Diffusion")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="write the decoded views side by side to this PNG")
    args = parser.parse_args()

    pipe = negguide.load_pipeline(args.model)
    device, unet, alphas = pipe.device, pipe.unet, pipe.scheduler.alphas_cumprod.to(pipe.device)
    prediction_type = pipe.scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise SystemExit(f"the model predicts {prediction_type!r}; this example handles epsilon and v_prediction")
    texts = ["", *(view_text(args.prompt, view) for view in VIEWS)]
    encoded = pipe.encode_prompt(texts, device, 1, False)[0]
    uncond, embeds = encoded[:1], dict(zip(VIEWS, encoded[1:]))
    positive, negatives, weights = view_embeddings(embeds, args.azimuths)

    def denoiser(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        out = unet(x, t, encoder_hidden_states=text).sample
        if prediction_type == "epsilon":
            return out
        a = alphas[t].reshape(-1, 1, 1, 1).to(out.dtype)
        return a.sqrt() * out + (1 - a).sqrt() * x  # epsilon from v

    generator = torch.Generator(device).manual_seed(args.seed)
    size = unet.config.sample_size
    shape = (len(args.azimuths), unet.config.in_channels, size, size)
    latents = torch.randn(shape, generator=generator, device=device, dtype=unet.dtype).requires_grad_()
    start = latents.detach().clone()
    optimiser = torch.optim.Adam([latents], lr=args.lr)
    print(f"{args.prompt!r} at azimuths {args.azimuths}; view-negative weights (front, side): {weights.tolist()}")
    for step in range(args.steps):
        t = torch.randint(20, 981, (len(latents),), generator=generator, device=device)
        noise = torch.randn(shape, generator=generator, device=device, dtype=unet.dtype)
        a = alphas[t].reshape(-1, 1, 1, 1).to(latents.dtype)
        noisy = a.sqrt() * latents.detach() + (1 - a).sqrt() * noise
        grad = perp_neg_sds(
            denoiser, noisy, t, positive, uncond, negatives, weights, args.guidance_scale, noise, grad_weight=1 - a
        ).grad
        optimiser.zero_grad()
        latents.backward(gradient=torch.nan_to_num(grad))  # d loss / d latents = grad
        optimiser.step()
        moved = (latents.detach() - start).flatten(1).norm(dim=1)
        print(f"step {step + 1:3d}: |grad| {grad.flatten(1).norm(dim=1).tolist()}  moved {moved.tolist()}")
    moved = (latents.detach() - start).norm() / start.norm()
    print(f"latents moved by {moved:.3f} of their initial norm in {args.steps} steps")
    if args.save:
        with torch.no_grad():
            images = pipe.vae.decode(latents.detach() / pipe.vae.config.scaling_factor).sample
        pipe.image_processor.postprocess(torch.cat(list(images), dim=-1)[None], output_type="pil")[0].save(args.save)
        print(f"wrote {args.save}")


if __name__ == "__main__":
    main()
