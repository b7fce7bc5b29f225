"""``negguide demo``: start the web demo. Gradio is imported only when the command runs."""

from __future__ import annotations

import argparse

from negguide.errors import InputError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``negguide`` command's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="start the web demo that compares the methods side by side",
        description="Start the web demo: the plain prompt, the standard negative and the chosen methods on the "
        "same seed, side by side, in the browser. It serves on this machine only unless --host or --share say "
        "otherwise.",
    )
    parser.add_argument("--model", help="diffusers folder or hub id (default: the embedded shapes-world model)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to serve on (default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The ``demo`` command: build the app (the model loads on the first generation) and serve it until stopped."""
    try:
        from negguide.demo.app import build_demo, launch_demo
    except ImportError as error:
        raise InputError(
            f"`negguide demo` needs Gradio ({error}); install it with: pip install 'negguide[demo]'"
        ) from None
    launch_demo(build_demo(args.model, device=args.device), host=args.host, port=args.port, share=args.share)
    return 0
