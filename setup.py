"""Package discovery; every other setting is in pyproject.toml.

The top-level ``pipelines/`` folder is installed as ``negguide.pipelines``, so each pipeline file is both an
importable module and a stand-alone diffusers custom pipeline.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["negguide", "negguide.*"]), "negguide.pipelines"],
    package_dir={"negguide.pipelines": "pipelines"},
)
