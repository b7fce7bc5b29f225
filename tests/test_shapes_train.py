"""The training command's continuation from a trained pipeline folder (``--init``)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from negguide.loading import embedded_model_path
from negguide.shapes.train import main, unet_config


def test_init_continues_from_the_folder_and_keeps_its_vae(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    main(["--init", str(embedded_model_path()), "--out", str(out), "--work", str(work), "--dataset-size", "8",
          "--unet-steps", "2", "--unet-batch", "2", "--unet-lr", "0.01"])
    start = StableDiffusionPipeline.from_pretrained(embedded_model_path())
    end = StableDiffusionPipeline.from_pretrained(out)
    assert not (work / "vae").exists()
    assert end.vae.config.scaling_factor == start.vae.config.scaling_factor
    assert all(torch.equal(a, b) for a, b in zip(start.vae.parameters(), end.vae.parameters()))
    torch.manual_seed(0)
    fresh = UNet2DConditionModel(**unet_config())
    latents, context = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 128)

    def predict(unet):
        with torch.no_grad():
            return unet.float()(latents, 500, context).sample

    moved = (predict(end.unet) - predict(start.unet)).norm()
    assert 0 < moved < (predict(fresh) - predict(start.unet)).norm() / 10


def test_init_must_be_a_pipeline_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--init", str(tmp_path), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert "not a diffusers pipeline folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_init_must_know_the_worlds_words(tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(embedded_model_path(), folder)
    config = folder / "text_encoder" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "vocab_size": 3}))
    with pytest.raises(SystemExit):
        main(["--init", str(folder), "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert "knows 3 tokens" in capsys.readouterr().err
    assert not (tmp_path / "work" / "latents.pt").exists()
