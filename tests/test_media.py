"""media-toolkit interop (the `media` extra), and the core staying free of it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import media_toolkit as toolkit
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fasttask import FastTaskAPI, ImageFile, MediaFile

ClientFor = Callable[[FastTaskAPI], TestClient]


def media_app(**settings: Any) -> FastTaskAPI:
    app = FastTaskAPI(title="media", **settings)

    @app.task_endpoint("/invert")
    def invert(image: ImageFile) -> ImageFile:
        pixels = image.to_np_array()
        return ImageFile.from_np_array(255 - pixels, img_type="png")

    @app.task_endpoint("/toolkit_result")
    def toolkit_result(image: ImageFile) -> Any:
        return image.to_media_toolkit()  # a task may return media-toolkit's own objects

    return app


def png_of(pixels: Any) -> bytes:
    data: bytes = toolkit.ImageFile().from_np_array(pixels, img_type="png").to_bytes()
    return data


@pytest.fixture
def client(
    client_for: ClientFor, queue_settings: dict[str, Any], with_workers: Callable[[FastTaskAPI], FastTaskAPI]
) -> TestClient:
    app = media_app(**queue_settings)
    client = client_for(app)
    with_workers(app)
    return client


def test_image_parameters_decode_to_numpy_and_encode_back(client: TestClient) -> None:
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    response = client.post("/invert", files={"image": ("in.png", png_of(pixels), "image/png")})
    job = client.get(f"/jobs/{response.json()['id']}", params={"wait": 20}).json()
    assert job["status"] == "finished", job
    assert job["result"]["content_type"] == "image/png"
    with ImageFile.from_bytes(client.get(job["result"]["url"]).content) as result:
        assert (result.to_np_array() == 255 - pixels).all()


def test_a_task_may_return_a_media_toolkit_object(client: TestClient) -> None:
    original = png_of(np.zeros((2, 2, 3), dtype=np.uint8))
    response = client.post("/toolkit_result", files={"image": ("z.png", original, "image/png")})
    job = client.get(f"/jobs/{response.json()['id']}", params={"wait": 20}).json()
    assert job["status"] == "finished", job
    assert job["result"]["file_name"] == "z.png"
    assert client.get(job["result"]["url"]).content == original


def test_the_core_never_imports_media_libraries() -> None:
    script = (
        "import sys, fasttask\n"
        "from fasttask import FastTaskAPI, ImageFile\n"
        "app = FastTaskAPI()\n"
        "@app.task_endpoint('/x')\n"
        "def x(image: ImageFile) -> ImageFile: return image\n"
        "app.fastapi\n"
        "heavy = sorted({'cv2', 'av', 'numpy', 'media_toolkit', 'boto3', 'runpod'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_without_the_extra_the_error_names_it() -> None:
    script = (
        "import sys\n"
        "sys.modules['media_toolkit'] = None  # as if it were not installed\n"
        "from fasttask import ImageFile, MissingExtra\n"
        "try:\n"
        "    ImageFile.from_bytes(b'png').to_np_array()\n"
        "except MissingExtra as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "pip install 'fasttask[media]'" in result.stdout
    with MediaFile.from_bytes(b"x") as plain:
        assert plain.to_bytes() == b"x"
