"""Package discovery; every other setting is in pyproject.toml.

The top-level ``pipelines/`` folder is installed as ``negguide.pipelines``, so each pipeline file is both an
importable module and a stand-alone diffusers custom pipeline; the top-level ``demo/`` folder (the web demo) is
installed as ``negguide.demo``, so ``negguide demo`` finds it wherever the package is installed.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["negguide", "negguide.*"]), "negguide.pipelines", "negguide.demo"],
    package_dir={"negguide.pipelines": "pipelines", "negguide.demo": "demo"},
)
