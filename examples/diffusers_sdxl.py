#!/usr/bin/env python3
"""Hand a learned initial noise to a diffusers SDXL pipeline.

The host keeps its own text encoders: it computes `prompt_embeds` as usual, asks the prior for
the initial latents, and passes them as `latents=`. diffusers multiplies `latents` by the
scheduler's `init_noise_sigma` (1.0 for DPM-Solver++ and DDIM, larger for Euler), so the prior's
noise goes in as it is: standard-normal scale.

Real model (downloads SDXL from the hub, needs a GPU or patience):
    python3 examples/diffusers_sdxl.py --prior noisear_sdxl.pth --prompt "a red fox in the snow"

Offline check of the hand-off (a tiny random-weight SDXL pipeline built from configs, with the
tiny NoiseAR fixture as the prior; no download):
    python3 examples/diffusers_sdxl.py --tiny --prior ../shared/fixtures/pth/noisear_tiny.pth

Needs: torch, diffusers, transformers (and numpy); `swift build -c release` for libnoisear.so;
`pip install ./python` or PYTHONPATH=python for noisear_gpu.
"""
import argparse
import sys

import numpy as np
import torch

import noisear_gpu


def tiny_pipeline(embed_dim: int):
    """A StableDiffusionXLPipeline from configs with random weights: UNet with SDXL's
    text-time conditioning, a small VAE, DPM-Solver++; no text encoders (embeddings are given)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        cross_attention_dim=embed_dim, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + embed_dim, transformer_layers_per_block=(1, 1),
        use_linear_projection=True, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=64)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", required=True, help="NoiseAR prior (.pth or .safetensors)")
    ap.add_argument("--prompt", default="a red fox in the snow")
    ap.add_argument("--model", default="stabilityai/stable-diffusion-xl-base-1.0")
    ap.add_argument("--tiny", action="store_true", help="offline check with a tiny random-weight pipeline")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="auto", help="noisear-gpu device for the prior")
    ap.add_argument("--out", default="sdxl_noisear.png")
    args = ap.parse_args()

    prior = noisear_gpu.load_prior(args.prior, device=args.device)
    if args.tiny:
        d = prior.embed_size
        pipe = tiny_pipeline(d)
        g = torch.Generator().manual_seed(1)
        prompt_embeds = torch.randn(1, 7, d, generator=g)
        negative = torch.zeros_like(prompt_embeds)
        pooled = torch.randn(1, d, generator=g)
        negative_pooled = torch.zeros_like(pooled)
        steps = min(args.steps, 4)
    else:
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline
        pipe = StableDiffusionXLPipeline.from_pretrained(args.model, torch_dtype=torch.float16)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        pipe.to("cuda" if torch.cuda.is_available() else "cpu")
        prompt_embeds, negative, pooled, negative_pooled = pipe.encode_prompt(args.prompt, do_classifier_free_guidance=True)
        steps = args.steps

    # The hand-off: the host's prompt embeddings in (a torch tensor on any device and dtype), the
    # prior's initial latents out, on the embeddings' device and dtype. rng="torch": the prior's
    # standard normals are torch.randn with a generator seeded args.seed, as diffusers draws.
    latents = prior.sample(prompt_embeds, seed=args.seed, temperature=0.5, rng="torch").to(pipe.unet.device, pipe.unet.dtype)
    noise = latents

    # Record what the UNet sees first, to show the pipeline starts from our noise.
    seen = []
    forward = pipe.unet.forward

    def spy(sample, *a, **k):
        if not seen:
            seen.append(sample.detach().float().cpu().clone())
        return forward(sample, *a, **k)

    pipe.unet.forward = spy
    kwargs = dict(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative, pooled_prompt_embeds=pooled,
                  negative_pooled_prompt_embeds=negative_pooled, num_inference_steps=steps, guidance_scale=5.0)
    out = pipe(latents=latents, output_type="np", **kwargs).images
    first = seen[0][: latents.shape[0]]
    expected = latents.float().cpu() * pipe.scheduler.init_noise_sigma
    handoff_error = float((pipe.scheduler.scale_model_input(expected, pipe.scheduler.timesteps[0]) - first).abs().max())
    print(f"prior {prior.kind} latents {tuple(noise.shape)}; first UNet input matches them: max |diff| = {handoff_error:.2e}")

    if args.tiny:
        # Same latents, same image; other latents, another image.
        seen.clear()
        again = pipe(latents=latents, output_type="np", **kwargs).images
        other = prior.sample(prompt_embeds, seed=args.seed + 1, rng="torch").to(latents.dtype)
        seen.clear()
        different = pipe(latents=other, output_type="np", **kwargs).images
        same = float(np.abs(out - again).max())
        changed = float(np.abs(out - different).max())
        print(f"same latents -> max |diff| {same:.2e}; other latents -> max |diff| {changed:.3f}; image {out.shape}")
        ok = handoff_error < 1e-5 and same < 1e-5 and changed > 1e-3
        print("hand-off OK" if ok else "hand-off FAILED")
        return 0 if ok else 1
    from PIL import Image
    Image.fromarray((out[0] * 255).round().astype(np.uint8)).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
