"""The Gradio app: `build_demo` makes it, `launch_demo` serves it.

Run it with ``negguide demo``, ``python -m demo`` or ``python demo/app.py`` (same options: ``--model``,
``--port``, ``--host``, ``--share``, ``--device``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

import gradio as gr
from diffusers import DiffusionPipeline

from negguide.demo.analyse_tab import analyse_tab
from negguide.demo.command import DEFAULT_HOST
from negguide.demo.compare_tab import compare_tab
from negguide.demo.model import DemoModel, demo_models

TITLE = "negguide: what a diffusion model must not draw"
INTRO = f"""# {TITLE}
The plain prompt, the standard negative prompt and the methods you pick, on the same seed, side by side.
The default model is the embedded shapes world: coloured shapes on white, captions like *a red circle and a blue
square*, where every object has a companion the captions often leave out.
"""
TABS: tuple[tuple[str, Callable[[Mapping[str, DemoModel]], None]], ...] = (
    ("Compare", compare_tab),
    ("Analyse", analyse_tab),
)
"""The app's tabs: a title and a function that builds the tab's content, for the models by name, in the current
Blocks context."""
MAX_FILE_SIZE = "20mb"
CACHE_CLEANUP = (3600, 24 * 3600)
"""Every hour, delete the served files older than a day."""
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
"""System fonts only, so the page loads nothing from the internet."""
CSS = """
.negguide-gallery img, .negguide-image img { image-rendering: pixelated; }
.negguide-gallery .caption-label { white-space: normal; overflow: visible; text-overflow: clip; }
.negguide-gallery .grid-wrap { max-height: none !important; height: auto !important; overflow: visible !important; }
.negguide-gallery .grid-container { grid-template-columns: repeat(var(--grid-cols), minmax(96px, 152px)) !important; }
"""
"""Small images (the shapes world's are 64x64) are enlarged without blurring, captions are shown whole, and every
row of a gallery is on the page (cells of at most 152 px, so six rows fit a 1,000 px window), never behind the
gallery's own scroll bar."""


def build_demo(
    model: str | None = None,
    *,
    pipeline: DiffusionPipeline | Mapping[str, DiffusionPipeline] | None = None,
    device: str | None = None,
    concurrency_limit: int = 1,
) -> gr.Blocks:
    """The demo app, with its queue; nothing is loaded until the first generation.

    Args:
        model (`str`, *optional*): a diffusers folder or hub id; by default the embedded models whose weights are
            installed (shapes-world, and shapes-world-distilled), one to choose in the page. Only their
            configuration is read here (`negguide.errors.InputError` when it cannot be).
        pipeline (`DiffusionPipeline` or a mapping of them by name, *optional*): already loaded negguide
            pipelines to use instead of ``model``; several are a choice in the page.
        device (`str`, *optional*): where to load ``model``; CUDA when available by default.
        concurrency_limit (`int`, defaults to 1): generations that may run at once; the others wait in the
            queue, in order.
    """
    if pipeline is not None and model is not None:
        raise ValueError("`model` and `pipeline` both given: pass one.")
    if isinstance(pipeline, Mapping):
        models = {name: DemoModel.from_pipeline(pipe, name=name) for name, pipe in pipeline.items()}
    elif pipeline is not None:
        source = DemoModel.from_pipeline(pipeline)
        models = {source.info.name: source}
    elif model is not None:
        source = DemoModel.from_model(model, device)
        models = {source.info.name: source}
    else:
        models = demo_models(device)
    if not models:
        raise ValueError("`pipeline` is an empty mapping: give at least one pipeline.")
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE_CLEANUP) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            for name, build in TABS:
                with gr.Tab(name):
                    build(models)
    return demo.queue(default_concurrency_limit=concurrency_limit)


def launch_demo(
    demo: gr.Blocks, *, host: str = DEFAULT_HOST, port: int | None = None, share: bool = False, block: bool = True
) -> str:
    """Serve ``demo`` on ``host:port`` (this machine only by default); returns its local address.

    Args:
        share (`bool`, defaults to False): also serve it through a public Gradio share link.
        block (`bool`, defaults to True): serve until interrupted; ``False`` returns at once (``demo.close()``
            stops it).
    """
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        max_file_size=MAX_FILE_SIZE,
        ssr_mode=False,
        quiet=not block,
        theme=THEME,
        css=CSS,
    )
    return demo.local_url


if __name__ == "__main__":
    from negguide.cli import main

    raise SystemExit(main(["demo", *sys.argv[1:]]))
