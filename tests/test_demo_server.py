"""The web demo served on 127.0.0.1 and called with `gradio_client`: named API parameters, readable errors that
leave the app serving (out-of-range values refused, not clamped), truncated prompts reported, downloads that carry
the batch command's metadata, and eight clients at once served in queue order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import PIL.Image
import pytest
from demo_helpers import FAST, generate_arguments, served, tiny_pipeline
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

from negguide.demo.app import build_demo
from negguide.metadata import parse_infotext, read_png_metadata
from negguide.pipelines import StableDiffusionNegGuidePipeline

CLIENTS = 8
COLUMNS = 3  # the plain prompt, the standard negative, Perp-Neg
PERPNEG = {**FAST, "methods": ["perpneg"]}
QUEUED = (Status.IN_QUEUE,)


class RecordingPipeline(StableDiffusionNegGuidePipeline):
    """Records the prompt of every call, in the order the calls start."""

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs["prompt"][0])
        return super().__call__(*args, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple]:
    pipe = tiny_pipeline(RecordingPipeline)
    pipe.calls = []
    demo = build_demo(pipeline=pipe)
    with served(demo) as url:
        yield demo, url, pipe.calls


def gallery_files(result: tuple) -> list[tuple[str, str]]:
    """The downloaded files and captions of the gallery, which the endpoint updates with its columns."""
    [gallery] = [output["value"] for output in result if isinstance(output, dict) and "columns" in output]
    return [(item["image"], item["caption"]) for item in gallery]


def summary(result: tuple) -> str:
    """The summary line under the gallery."""
    [line] = [output for output in result if isinstance(output, str) and " s. Each download" in output]
    return line


def test_the_api_names_every_parameter_with_a_type_and_a_default(server) -> None:
    _, url, _ = server
    api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    for endpoint in ("/generate", "/analyse", "/remove"):
        parameters = api[endpoint]["parameters"]
        names = [parameter["parameter_name"] for parameter in parameters]
        assert not [name for name in names if name.startswith("param_")], endpoint
        assert all(parameter["parameter_has_default"] for parameter in parameters), endpoint
    generate = {parameter["parameter_name"]: parameter for parameter in api["/generate"]["parameters"]}
    assert {"prompt", "negatives", "methods", "seed", "steps", "negtome_alpha", "nag_scale"} <= set(generate)
    assert generate["steps"]["python_type"]["type"] == "float" and generate["prompt"]["parameter_default"]


def test_bad_requests_get_readable_errors_and_the_app_keeps_serving(server, tmp_path: Path) -> None:
    _, url, _ = server
    client = Client(url, verbose=False)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    other = tmp_path / "notes.txt"
    other.write_text("not an image")
    huge = tmp_path / "huge.png"
    PIL.Image.new("L", (5000, 4000)).save(huge)
    reference = {"methods": ["negtome"], "negtome.mode": "reference"}
    bad = [
        ({"prompt": ""}, "`Prompt` is empty"),
        ({"steps": 0}, r"`Steps` must lie between 1 and 100, got 0\."),
        ({"steps": 100000}, r"`Steps` must lie between 1 and 100, got 100000\."),
        ({"images": 9}, "`Images per method` must lie between 1 and 4, got 9"),
        ({"perpneg.negative_scale": -2.0}, "`Perp-Neg settings`: perpneg: `negative_scale` must be >= 0"),
        ({**reference, "reference": text}, "`Reference image`: notes.png is not an image that can be read"),
        ({**reference, "reference": other}, "Invalid file type"),
        ({**reference, "reference": huge}, "`Reference image` is 5000x4000 pixels"),
    ]
    for values, message in bad:
        with pytest.raises(AppError, match=message) as error:
            client.predict(**generate_arguments({**PERPNEG, **values}), api_name="/generate")
        assert "/tmp/" not in str(error.value) and "gradio" not in str(error.value).lower()
    result = client.predict(**generate_arguments({**PERPNEG, "prompt": "a green circle"}), api_name="/generate")
    assert [caption for _, caption in gallery_files(result)] == ["plain prompt", "standard negative", "Perp-Neg"]


def test_a_prompt_longer_than_the_model_reads_is_reported_with_the_tokens_kept(server) -> None:
    _, url, _ = server
    client = Client(url, verbose=False)
    long = ("a red square and a blue triangle " * 400)[:10_000]
    result = client.predict(**generate_arguments({**PERPNEG, "prompt": long}), api_name="/generate")
    line = summary(result)
    assert "`Prompt` is " in line and "tokens long; the model reads the first " in line
    kept = int(line.split("the model reads the first ")[1].split()[0])
    assert 0 < kept < int(line.split("`Prompt` is ")[1].split()[0].replace(",", ""))
    short = client.predict(**generate_arguments(PERPNEG), api_name="/generate")
    assert "tokens long" not in summary(short)


def test_downloads_are_pngs_with_the_batch_metadata(server, tmp_path: Path) -> None:
    _, url, _ = server
    client = Client(url, verbose=False, download_files=str(tmp_path))
    values = {
        **FAST,
        "prompt": "a yellow square",
        "seed": 11,
        "methods": ["negtome"],
        "images": 2,
        "reference": None,
        "negtome.mode": "batch",
    }
    files = gallery_files(client.predict(**generate_arguments(values), api_name="/generate"))
    assert [caption for _, caption in files] == [
        f"{title}, seed {seed}" for title in ("plain prompt", "standard negative", "NegToMe") for seed in (11, 12)
    ]
    for path, _ in files:
        with PIL.Image.open(path) as image:
            assert image.format == "PNG"
        parameters, config = read_png_metadata(path)
        assert parse_infotext(parameters)["Prompt"] == "a yellow square"
        assert config["job"]["prompt"] == "a yellow square" and config["job"]["steps"] == FAST["steps"]


def test_eight_clients_at_once_all_served_in_queue_order(server) -> None:
    _, url, calls = server
    with ThreadPoolExecutor(CLIENTS) as pool:
        clients = list(pool.map(lambda _: Client(url, verbose=False), range(CLIENTS)))
    calls.clear()
    prompts = [f"a red circle number {i}" for i in range(CLIENTS)]
    jobs = []
    for client, prompt in zip(clients, prompts):
        jobs.append(client.submit(**generate_arguments({**PERPNEG, "prompt": prompt}), api_name="/generate"))
        _wait_until(jobs[-1], QUEUED)
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda job: job.result(timeout=120), jobs))
    assert [len(gallery_files(result)) for result in results] == [COLUMNS] * CLIENTS
    assert calls == [prompt for prompt in prompts for _ in range(COLUMNS)]


def _wait_until(job, states: tuple[Status, ...], timeout_s: float = 60.0) -> None:
    """Until ``job`` reaches one of ``states`` (or a later one) on the server."""
    order = list(Status)
    deadline = time.monotonic() + timeout_s
    while order.index(job.status().code) < min(map(order.index, states)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert order.index(job.status().code) >= min(map(order.index, states)), f"{job.status().code} after {timeout_s} s"


def test_a_cancelled_generation_stops_and_the_next_one_runs(server) -> None:
    _, url, calls = server
    client = Client(url, verbose=False)
    calls.clear()
    slow = {"prompt": "a slow red circle", "steps": 40, "methods": ["perpneg"]}
    job = client.submit(**generate_arguments(slow), api_name="/generate")
    _wait_until(job, (Status.PROCESSING, Status.ITERATING, Status.PROGRESS))
    assert job.cancel()
    result = client.predict(**generate_arguments({**PERPNEG, "prompt": "a green square"}), api_name="/generate")
    assert len(gallery_files(result)) == COLUMNS
    assert calls.count(slow["prompt"]) < COLUMNS
    assert job.status().code == Status.CANCELLED
