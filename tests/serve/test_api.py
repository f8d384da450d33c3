"""The DrawingBot HTTP API with FastAPI's TestClient, on a tiny untrained model."""

import base64
import io
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from serve_fakes import WORDS_NUM  # noqa: E402

from attngan_fast.serve import engine as engine_module  # noqa: E402
from attngan_fast.serve.app import MAX_BODY_BYTES, STATIC, create_app  # noqa: E402
from attngan_fast.serve.engine import DrawingEngine  # noqa: E402

CAPTION = "this bird has a red crown and blue wings"


def _client(run: Path, **limits) -> TestClient:
    engine = DrawingEngine.from_checkpoint(run, device="cpu", **limits)
    return TestClient(create_app(engine), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(tiny_run):
    with _client(tiny_run) as c:
        yield c


def _png(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "PNG"
    return image


def _generate(client, **body):
    return client.post("/api/generate", json={"caption": CAPTION, **body})


def test_health_reports_model_device_and_limits(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    info = response.json()
    assert info["status"] == "ok" and info["device"] == "cpu"
    assert info["model"]["name"] == "tiny"
    assert info["model"]["stages"] == [64, 128, 256]
    assert info["model"]["attention_stages"] == [2, 3]
    assert info["attention_backend"] == "cpu"  # the automatic choice on CPU tensors
    assert info["limits"]["max_words"] == WORDS_NUM  # from the run's config.yml
    assert info["limits"]["max_n"] == 8


def test_generate_returns_every_stage_and_each_words_attention(client):
    response = _generate(client, seed=5, n=2)
    assert response.status_code == 200
    result = response.json()
    tokens = CAPTION.split()
    assert result["tokens"] == tokens and result["unknown"] == []
    assert result["seed"] == 5 and result["n"] == 2 and result["device"] == "cpu"
    assert [s["stage"] for s in result["stages"]] == [1, 2, 3]
    for stage in result["stages"]:
        assert len(stage["images_png"]) == 2
        for data in stage["images_png"]:
            image = _png(data)
            assert image.mode == "RGB" and image.size == (stage["size"], stage["size"])
    assert [a["stage"] for a in result["attention"]] == [2, 3]
    assert [a["map_size"] for a in result["attention"]] == [[64, 64], [128, 128]]
    for att in result["attention"]:
        assert att["size"] == result["stages"][att["stage"] - 1]["size"]
        assert len(att["maps_png"]) == 2 and all(len(m) == len(tokens) for m in att["maps_png"])
        maps = [np.asarray(_png(m)) for m in att["maps_png"][0]]
        assert all(m.shape == tuple(att["map_size"]) for m in maps)
        assert all(m.dtype == np.uint8 and m.max() == 255 for m in maps)  # rescaled per word
    first = result["stages"][-1]["images_png"]
    assert first[0] != first[1]  # two samples, two noises


def test_unknown_words_are_left_out_and_listed(client):
    response = client.post(
        "/api/generate", json={"caption": "A purple bird, with a red crown!", "seed": 1}
    )
    assert response.status_code == 200
    result = response.json()
    assert result["tokens"] == ["a", "bird", "with", "a", "red", "crown"]
    assert result["unknown"] == ["purple"]
    assert all(len(a["maps_png"][0]) == 6 for a in result["attention"])


def test_the_seed_fixes_the_noise_and_same_noise_off_draws_a_new_one(client):
    a, b = _generate(client, seed=11).json(), _generate(client, seed=11).json()
    assert a["stages"] == b["stages"] and a["attention"] == b["attention"]
    c = _generate(client, seed=12).json()
    assert c["stages"][0]["images_png"] != a["stages"][0]["images_png"]
    fresh = [_generate(client, seed=11, same_noise=False).json()["seed"] for _ in range(2)]
    assert fresh[0] != fresh[1] and 11 not in fresh
    drawn = _generate(client).json()["seed"]  # no seed: one is drawn and returned
    again = _generate(client, seed=drawn).json()
    assert (
        again["seed"] == drawn and again["stages"] == _generate(client, seed=drawn).json()["stages"]
    )


def test_the_noise_does_not_depend_on_the_caption(client):
    """Same seed, another caption (other length): G gets the same z (the 'same noise' switch)."""
    netG = client.app.state.engine.models.netG
    seen = []
    hook = netG.h_net1.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    try:
        _generate(client, seed=3, n=2)
        client.post("/api/generate", json={"caption": "a small white bird", "seed": 3, "n": 2})
        client.post("/api/generate", json={"caption": "a small white bird", "seed": 4, "n": 2})
    finally:
        hook.remove()
    assert len(seen) == 3
    assert (seen[0] == seen[1]).all() and not (seen[1] == seen[2]).all()


ERRORS = [
    ({"caption": ""}, 422, "empty_caption"),
    ({"caption": " ,;  "}, 422, "empty_caption"),
    ({"caption": " ".join(["red"] * (WORDS_NUM + 1))}, 422, "caption_too_long"),
    ({"caption": "red " * 400}, 422, "caption_too_long"),  # over max_chars
    ({"caption": "zebra crossing"}, 422, "no_known_word"),
    ({"caption": CAPTION, "n": 9}, 422, "n_too_large"),
    ({"caption": CAPTION, "n": 0}, 422, "invalid_request"),
    ({"caption": CAPTION, "seed": -1}, 422, "invalid_request"),
    ({"caption": CAPTION, "seed": 2**32}, 422, "invalid_request"),
    ({"caption": 3}, 422, "invalid_request"),
    ({"seed": 1}, 422, "invalid_request"),
    ({"caption": CAPTION, "steps": 3}, 422, "invalid_request"),
]


@pytest.mark.parametrize(("body", "status", "code"), ERRORS)
def test_bad_requests_get_a_json_error(client, body, status, code):
    response = client.post("/api/generate", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert "Traceback" not in response.text


def test_error_messages_say_what_is_wrong(client):
    long = " ".join(["red"] * (WORDS_NUM + 1))
    message = client.post("/api/generate", json={"caption": long}).json()["error"]["message"]
    assert f"{WORDS_NUM + 1} words" in message and f"at most {WORDS_NUM}" in message
    message = _generate(client, n=9).json()["error"]["message"]
    assert "at most 8" in message
    message = client.post("/api/generate", json={"seed": 1}).json()["error"]["message"]
    assert message.startswith("caption:")


def test_malformed_and_oversized_bodies(client):
    headers = {"Content-Type": "application/json"}
    response = client.post("/api/generate", content=b'{"caption": "a red', headers=headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    big = json.dumps({"caption": "a" * MAX_BODY_BYTES}).encode()
    response = client.post("/api/generate", content=big, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    chunked = client.post("/api/generate", content=iter([b'{"caption": "a"}']), headers=headers)
    assert chunked.status_code == 411


def test_other_routes_and_methods_answer_json(client):
    response = client.get("/api/nothing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = client.get("/api/generate")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert client.get("/docs").status_code == 404  # Swagger UI would load a CDN


def test_a_failing_model_gives_500_without_details(tiny_run, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory at /secret/path")

    monkeypatch.setattr(engine_module, "run_generator", broken)
    with _client(tiny_run, max_pending=1) as client:
        response = _generate(client)
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "internal" and "secret" not in response.text
        assert "Traceback" not in response.text
        monkeypatch.undo()
        assert _generate(client).status_code == 200  # the slot was given back


def test_concurrent_requests_get_their_own_images_and_the_model_runs_one_at_a_time(
    tiny_run, monkeypatch
):
    active, most = [0], [0]
    lock = threading.Lock()
    real = engine_module.run_generator

    def counting(*args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    requests = [{"caption": CAPTION, "seed": s, "n": 1 + s % 3} for s in range(4)] + [
        {"caption": "a small white bird with blue wings", "seed": s} for s in range(4)
    ]
    with _client(tiny_run, max_pending=8) as client:
        alone = [client.post("/api/generate", json=r).json() for r in requests]
        monkeypatch.setattr(engine_module, "run_generator", counting)
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda r: client.post("/api/generate", json=r), requests))
    assert [r.status_code for r in together] == [200] * len(requests)
    for a, b in zip(alone, together):
        b = b.json()
        assert a["stages"] == b["stages"] and a["attention"] == b["attention"]
    assert most[0] == 1


def test_a_full_server_answers_503_at_once(tiny_run, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real = engine_module.run_generator

    def slow(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module, "run_generator", slow)
    with _client(tiny_run, max_pending=1) as client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(_generate, client, seed=1)
        assert entered.wait(30)
        busy = _generate(client, seed=2)
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy"
        assert busy.headers["retry-after"] == "1"
        release.set()
        assert first.result().status_code == 200
        assert _generate(client, seed=2).status_code == 200


def test_the_page_and_its_files_load_from_this_server_only(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    html = response.text
    links = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert links and all(link.startswith("/static/") for link in links)
    for link in links:
        assert client.get(link).status_code == 200
    for path in STATIC.iterdir():  # no address elsewhere (CDN, fonts, ...)
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), path.name


@pytest.mark.gpu
def test_generation_runs_on_the_gpu_with_the_fused_ops(tiny_run):
    engine = DrawingEngine.from_checkpoint(tiny_run)  # default device: the GPU
    info = engine.info()
    assert info["device"].startswith("cuda") and info["attention_backend"] != "torch"
    engine.warm_up()
    with TestClient(create_app(engine)) as client:
        a, b = _generate(client, seed=4, n=3).json(), _generate(client, seed=4, n=3).json()
    assert a["device"].startswith("cuda") and a["stages"] == b["stages"]
    assert [len(s["images_png"]) for s in a["stages"]] == [3, 3, 3]
