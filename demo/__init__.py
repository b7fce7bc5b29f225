"""The negguide web demo: negative-guidance methods side by side in the browser.

``build_demo()`` in `demo.app` (installed as ``negguide.demo.app``) makes the Gradio app; ``negguide demo``,
``python -m demo`` and ``python demo/app.py`` start it. Importing this package does not import Gradio, so the
``negguide`` command works without the ``demo`` extra.
"""
