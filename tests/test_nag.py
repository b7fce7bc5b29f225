"""NAG: the formula against a hand-written reference, its invariants, and the module on UNet pipelines."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import generators
from diffusers import StableDiffusionXLPipeline
from family_helpers import hook_count, max_difference, run, sdxl_components

from negguide import NAG, Negative, NegativePrompts, NegToMe, PerpNeg, guidance_from_dict
from negguide import functional as F
from negguide.pipelines import StableDiffusionXLNegGuidePipeline

PROMPT = "a red circle"


def reference_nag(positive, negative, scale, tau, alpha, norm, projection):
    """The official formula token by token, in float64: ``Zt = s Z+ - (s - 1) Z-``, clipped, blended."""
    order = 1 if norm == "l1" else 2
    out = torch.empty(positive.shape, dtype=torch.float64)
    for index in itertools.product(*map(range, positive.shape[:-1])):
        a, b = positive[index].double(), negative[index].double()
        if projection == "perpendicular":
            away = b - a
            away = away - (away @ a) / (a @ a) * a
            guided = a - (scale - 1) * away
        else:
            guided = scale * a - (scale - 1) * b
        ratio = guided.norm(order) / a.norm(order)
        clipped = guided * min(ratio.item(), tau) / ratio
        out[index] = alpha * clipped + (1 - alpha) * a
    return out


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("projection", [None, "perpendicular"])
def test_formula_matches_the_reference(norm, projection):
    torch.manual_seed(0)
    positive, negative = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    for scale, tau in ((4.0, 2.5), (1.5, 10.0), (6.0, 1.0)):
        got = F.nag(positive, negative, scale, tau, 0.3, norm, projection)
        want = reference_nag(positive, negative, scale, tau, 0.3, norm, projection)
        assert torch.allclose(got.double(), want, atol=1e-5)


def test_scale_one_and_an_equal_negative_leave_the_output_unchanged_bit_for_bit():
    torch.manual_seed(0)
    positive, negative = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    for projection in (None, "perpendicular"):
        assert torch.equal(F.nag(positive, negative, 1.0, 2.5, 0.5, projection=projection), positive)
        assert torch.equal(F.nag(positive, positive.clone(), 5.0, 2.5, 0.5, projection=projection), positive)


def test_the_perpendicular_form_ignores_a_negative_along_the_positive():
    torch.manual_seed(0)
    positive = torch.randn(4, 8)
    assert torch.allclose(F.nag(positive, 0.3 * positive, 4.0, 2.5, 1.0, projection="perpendicular"), positive)
    assert not torch.allclose(F.nag(positive, 0.3 * positive, 4.0, 2.5, 1.0), positive)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_zero_positives_and_low_precision_stay_finite(dtype):
    torch.manual_seed(0)
    negative = torch.randn(2, 4, 8).to(dtype)
    for positive in (torch.zeros(2, 4, 8, dtype=dtype), torch.randn(2, 4, 8).to(dtype) * 1e-4):
        for norm, projection in itertools.product(F.NAG_NORMS, F.NAG_PROJECTIONS):
            out = F.nag(positive, negative, 5.0, 2.5, 0.5, norm, projection)
            assert out.dtype == dtype and torch.isfinite(out).all()


def test_the_module_changes_the_image_at_guidance_scale_one_with_one_evaluation_per_image(pipe, unet_rows):
    plain = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=1.0)
    rows_plain = list(unet_rows.rows)
    unet_rows.rows.clear()
    guided = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=1.0, guidance=NAG(["blue square"], scale=4.0))
    assert unet_rows.rows == rows_plain == [2, 2]
    assert max_difference(plain, guided) > 1e-3


def test_scale_one_or_the_prompt_as_negative_give_the_unpatched_images_exactly(pipe):
    plain = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0)
    assert torch.equal(run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, guidance=NAG(["blue square"], scale=1.0)), plain)
    assert torch.equal(run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, guidance=NAG([PROMPT], scale=5.0)), plain)


def test_a_batch_gives_the_images_of_one_call_per_image(pipe):
    module = NAG([Negative(["blue square", "red circle"])], scale=4.0)
    batch = run(pipe, guidance_scale=1.0, guidance=module)
    for p, prompt in enumerate(["a red circle", "a blue square"]):
        for k in range(2):
            seed = 2 * p + k
            single = run(
                pipe, prompt=prompt, num_images_per_prompt=1, seeds=(seed,), guidance_scale=1.0,
                guidance=NAG([module.negatives[0].text[p]], scale=4.0),
            )
            assert max_difference(batch[seed : seed + 1], single) < 1e-5


def test_the_flag_form_takes_the_negative_prompt_and_leaves_the_cfg_baseline_empty(pipe):
    explicit = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, guidance=NAG(["blue square"]))
    flag = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, negative_prompt="blue square", guidance="nag")
    assert torch.equal(flag, explicit)
    cfg_negative = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, negative_prompt="blue square")
    assert max_difference(flag, cfg_negative) > 1e-4


def test_several_negatives_average_their_attention_outputs_by_weight(pipe):
    both = NAG([Negative("blue square", weight=1.0), Negative("green triangle", weight=3.0)], scale=3.0)
    one = NAG(["blue square"], scale=3.0)
    images = [run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=1.0, guidance=m) for m in (both, one)]
    assert max_difference(*images) > 1e-4
    same = NAG([Negative("blue square", weight=1.0), Negative("blue square", weight=3.0)], scale=3.0)
    assert max_difference(run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=1.0, guidance=same), images[1]) < 1e-5


def test_outside_its_window_the_module_does_nothing(pipe):
    plain = latents_after_each_step(pipe, None)
    late = latents_after_each_step(pipe, NAG(["blue square"], scale=4.0, start=0.5))
    assert torch.equal(plain[0], late[0]) and torch.equal(plain[1], late[1])
    assert max_difference(plain[2], late[2]) > 1e-5


def latents_after_each_step(pipe, guidance):
    seen = []

    def record(pipe, step, timestep, tensors):
        seen.append(tensors["latents"].clone())
        return tensors

    run(pipe, prompt=PROMPT, num_images_per_prompt=1, seeds=(0,), num_inference_steps=4, guidance_scale=1.0,
        guidance=guidance, callback_on_step_end=record)
    return seen


def test_composes_with_every_combiner_and_with_negtome(pipe):
    plain = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, guidance=[PerpNeg(["blue square"]), NegToMe(alpha=2.0)])
    with_nag = run(
        pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0,
        guidance=[PerpNeg(["blue square"]), NegToMe(alpha=2.0), NAG(["green triangle"], scale=4.0)],
    )
    assert torch.isfinite(with_nag).all() and max_difference(plain, with_nag) > 1e-4
    cfg = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, guidance=[NegativePrompts(["blue square"]), NAG(["x"])])
    assert torch.isfinite(cfg).all()


def test_hooks_are_removed_after_a_run_and_after_an_exception(pipe):
    before = hook_count(pipe.unet)
    processors = dict(pipe.unet.attn_processors)
    run(pipe, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["blue square"]))
    assert hook_count(pipe.unet) == before

    def fail(pipe, step, timestep, tensors):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        run(pipe, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["blue square"]), callback_on_step_end=fail)
    assert hook_count(pipe.unet) == before
    assert dict(pipe.unet.attn_processors) == processors


def test_sdxl_takes_it_too():
    pipe = StableDiffusionXLNegGuidePipeline.from_pipe(StableDiffusionXLPipeline(**sdxl_components()))
    pipe.set_progress_bar_config(disable=True)
    plain = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=1.0)
    assert torch.equal(run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=1.0, guidance=NAG(["blue"], scale=1.0)), plain)
    assert max_difference(run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=1.0, guidance=NAG(["blue"], scale=4.0)), plain) > 1e-4


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"negatives": ["x"], "scale": 0.5}, ValueError, "`scale` must be >= 1"),
        ({"negatives": ["x"], "tau": 0.9}, ValueError, "`tau` must be >= 1"),
        ({"negatives": ["x"], "alpha": 1.5}, ValueError, "`alpha` must lie in"),
        ({"negatives": ["x"], "alpha": -0.1}, ValueError, "`alpha` must lie in"),
        ({"negatives": []}, ValueError, "NAG needs a negative"),
        ({"negatives": "x"}, TypeError, "wrap a single one in a list"),
        ({"negatives": ["x"], "norm": "l3"}, ValueError, "`norm`"),
        ({"negatives": ["x"], "projection": "parallel"}, ValueError, "`projection`"),
        ({"negatives": ["x"], "start": 0.5, "stop": 0.5}, ValueError, "`start`"),
        ({"negatives": ["x"], "layers": "("}, ValueError, "not a valid regular expression"),
    ],
)
def test_bad_settings_are_refused(settings, error, match):
    with pytest.raises(error, match=match):
        NAG(**settings)


def test_bad_calls_fail_before_the_network_runs(pipe, unet_rows):
    with pytest.raises(ValueError, match="matches no attention module"):
        run(pipe, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["x"], layers="^nothing$"))
    with pytest.raises(ValueError, match="not a cross-attention layer"):
        run(pipe, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["x"], layers=r"\.attn1$"))
    with pytest.raises(ValueError, match="has 3 texts but the call has 2 prompts"):
        run(pipe, guidance=NAG([Negative(["a", "b", "c"])]))
    with pytest.raises(ValueError, match="negative_prompt"):
        run(pipe, prompt=PROMPT, seeds=(0, 1), guidance="nag")
    assert unet_rows.rows == []


def test_round_trips_through_its_dict():
    module = NAG([Negative("blue", weight=2.0)], scale=4.0, alpha=0.25, stop=0.25, norm="l2", projection="perpendicular")
    assert guidance_from_dict(module.to_dict()) == module
    assert NAG.from_dict({"negatives": ["blue"]}).scale is None


def test_generators_are_per_image(pipe):
    images = pipe(
        [PROMPT] * 2, generator=generators(3, 4), num_inference_steps=2, output_type="pt",
        guidance=NAG(["blue square"]),
    ).images
    assert max_difference(images[0], images[1]) > 1e-4


def transformer_pipelines():
    from diffusers import FluxPipeline, StableDiffusion3Pipeline
    from family_helpers import flux_components, sd3_components

    from negguide.pipelines import FluxNegGuidePipeline, StableDiffusion3NegGuidePipeline

    sd3 = StableDiffusion3NegGuidePipeline.from_pipe(StableDiffusion3Pipeline(**sd3_components()))
    flux = FluxNegGuidePipeline.from_pipe(FluxPipeline(**flux_components()))
    for pipeline in (sd3, flux):
        pipeline.set_progress_bar_config(disable=True)
    return {"sd3": (sd3, {"guidance_scale": 1.0}), "flux": (flux, {})}


@pytest.fixture(scope="module", params=["sd3", "flux"])
def transformer(request):
    return transformer_pipelines()[request.param]


def test_transformers_scale_one_and_the_prompt_as_negative_change_nothing(transformer):
    pipeline, settings = transformer
    plain = run(pipeline, prompt=PROMPT, seeds=(0, 1), **settings)
    assert torch.equal(run(pipeline, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["blue"], scale=1.0), **settings), plain)
    same = run(pipeline, prompt=PROMPT, seeds=(0, 1), guidance=NAG([PROMPT], scale=5.0), **settings)
    assert max_difference(same, plain) < 1e-6


def test_transformers_take_the_negative_as_a_text_stream_at_one_evaluation(transformer):
    pipeline, settings = transformer
    denoiser = pipeline.transformer
    rows = []
    handle = denoiser.register_forward_pre_hook(lambda m, a, k: rows.append(len(k["hidden_states"])), with_kwargs=True)
    try:
        flag = run(pipeline, prompt=PROMPT, seeds=(0, 1), negative_prompt="blue square", guidance="nag", **settings)
    finally:
        handle.remove()
    assert rows == [2, 2]
    plain = run(pipeline, prompt=PROMPT, seeds=(0, 1), **settings)
    assert max_difference(flag, plain) > 1e-5
    assert torch.equal(flag, run(pipeline, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["blue square"]), **settings))


def test_transformers_project_the_image_tokens_once_for_the_negative(transformer):
    """The negative's rows share their image tokens' projections with the prompt's rows: the image projections
    run on the forward's own rows, and Flux's single blocks run only the forward's own rows through their hooked
    layers (the negative's text tokens pass through the layers' forward apart)."""
    pipeline, settings = transformer
    denoiser = pipeline.transformer
    attention = denoiser.transformer_blocks[0].attn
    layers = {"to_q": attention.to_q, "add_q_proj": attention.add_q_proj}
    if hasattr(denoiser, "single_transformer_blocks"):
        single = denoiser.single_transformer_blocks[0]
        layers |= {"single to_q": single.attn.to_q, "proj_mlp": single.proj_mlp, "proj_out": single.proj_out}
    seen = {name: set() for name in layers}
    handles = [
        layer.register_forward_hook(lambda module, args, output, name=name: seen[name].add(tuple(args[0].shape[:2])))
        for name, layer in layers.items()
    ]
    try:
        run(pipeline, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["blue square"]), **settings)
    finally:
        for handle in handles:
            handle.remove()
    ((text_rows, text),) = seen["add_q_proj"]
    ((image_rows, image),) = seen["to_q"]
    assert (text_rows, image_rows) == (4, 2)  # two images, each with the prompt's and the negative's text
    for name in ("single to_q", "proj_mlp", "proj_out"):
        if name in seen:  # the negative's text tokens run through the layer's own forward, outside its hooks
            assert seen[name] == {(2, text + image)}, (name, seen[name])


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_fused_projections_are_shared_too(family):
    """With ``fuse_qkv_projections`` the fused image projection runs on the forward's own rows as well, and the
    images are those of the separate projections."""
    pipeline, settings = transformer_pipelines()[family]
    call = {"prompt": PROMPT, "seeds": (0, 1), "guidance": NAG(["blue square"]), **settings}
    separate = run(pipeline, **call)
    pipeline.transformer.fuse_qkv_projections()
    rows = set()
    handle = pipeline.transformer.transformer_blocks[0].attn.to_qkv.register_forward_hook(
        lambda module, args, output: rows.add(len(args[0]))
    )
    try:
        fused = run(pipeline, **call)
    finally:
        handle.remove()
    assert rows == {2}
    assert max_difference(fused, separate) < 1e-5


def test_transformers_batched_equals_one_by_one(transformer):
    pipeline, settings = transformer
    module = NAG([Negative(["blue square", "red circle"])], scale=4.0)
    batch = run(pipeline, guidance=module, **settings)
    for p, prompt in enumerate(["a red circle", "a blue square"]):
        seed = 2 * p + 1
        single = run(
            pipeline, prompt=prompt, num_images_per_prompt=1, seeds=(seed,),
            guidance=NAG([module.negatives[0].text[p]], scale=4.0), **settings,
        )
        assert max_difference(batch[seed : seed + 1], single) < 1e-5


def test_transformers_restore_their_hooks_and_compose_with_negtome(transformer):
    pipeline, settings = transformer
    before = hook_count(pipeline.transformer)

    def fail(pipe, step, timestep, tensors):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        run(pipeline, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["blue"]), callback_on_step_end=fail, **settings)
    assert hook_count(pipeline.transformer) == before
    images = run(pipeline, guidance=[NAG(["blue square"], scale=4.0), NegToMe(alpha=2.0, stop=1.0)], **settings)
    assert torch.isfinite(images).all() and hook_count(pipeline.transformer) == before


def test_transformer_layers_must_be_joint_attention(transformer):
    pipeline, settings = transformer
    with pytest.raises(ValueError, match="matches no attention module"):
        run(pipeline, prompt=PROMPT, seeds=(0, 1), guidance=NAG(["x"], layers="attn2$"), **settings)


def test_a_negative_prompt_that_is_nags_own_negative_acts_once(pipe):
    flag = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, negative_prompt="blue square", guidance="nag")
    own = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, negative_prompt="blue square",
              guidance=NAG(["blue square"]))
    assert torch.equal(own, flag)
    both = run(pipe, prompt=PROMPT, seeds=(0, 1), guidance_scale=3.0, negative_prompt="green triangle",
               guidance=NAG(["blue square"]))
    assert max_difference(both, own) > 1e-4
