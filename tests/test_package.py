"""The ``negguide`` package's public names: they load on first use, so that importing the package loads neither
diffusers nor transformers (the command line sets up what those print first), and each is its module's own."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import negguide

LOADED = (
    "import sys, negguide; print(sorted(m for m in sys.modules if m.split('.')[0] in ('diffusers', 'transformers')))"
)


def test_importing_the_package_loads_no_library():
    result = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True, check=True)
    assert (result.stdout.strip(), result.stderr) == ("[]", "")


def test_every_public_name_is_the_object_of_its_module():
    assert set(negguide.__all__) == set(negguide._HOME)
    for name in negguide.__all__:
        assert getattr(negguide, name) is getattr(importlib.import_module(negguide._HOME[name]), name), name
    assert set(negguide.__all__) <= set(dir(negguide))


def test_another_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'load_pipelines'"):
        negguide.load_pipelines  # noqa: B018
