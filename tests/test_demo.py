"""The demo of a trained model: its Space folder, the push of the Space (up to the network), the page's answers to
good and bad images, and the Space's app served and used in a real headless Chromium."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import flags, load_script, run_script
from PIL import Image
from tiny_run import TINY

from training import hub
from training.cli import finetune_main
from training.space import SPACE_MODULES

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def finished(dataset, tmp_path_factory) -> Path:
    output_dir = tmp_path_factory.mktemp("demo") / "out"
    assert finetune_main(TINY + flags(dataset, output_dir, "--save_strategy", "no", "--stage_epochs", "1,1,1")) == 0
    return output_dir


def test_a_finished_run_holds_its_space(finished):
    space = finished / "space"
    assert {p.name for p in space.iterdir()} == {"app.py", "requirements.txt", "README.md", "training", "examples"}
    package = Path(hub.__file__).parent
    for name in SPACE_MODULES:  # the demo's own modules, as installed: one version of the code
        assert (space / "training" / name).read_text() == (package / name).read_text()
    card = (space / "README.md").read_text()
    assert "sdk: gradio" in card and "app_file: app.py" in card
    assert "gradio>=5" in (space / "requirements.txt").read_text().split()
    examples = sorted((space / "examples").glob("*.png"))
    assert len(examples) == 4 and all(Image.open(p).size == (16, 16) for p in examples)
    assert all(p.stem.split("_", 1)[1] in {"cat", "dog", "ship", "truck"} for p in examples)


def test_push_space_sends_the_app_at_the_root_and_the_model_under_model(finished, monkeypatch):
    sent = {}

    def create_commit(self, repo_id, operations, commit_message, repo_type=None, **kwargs):
        sent.update(repo_id=repo_id, repo_type=repo_type, files={op.path_in_repo for op in operations})
        return "commit-url"

    monkeypatch.setattr(hub.HfApi, "create_commit", create_commit)
    assert hub.push_space(finished, "someone/demo") == "commit-url"
    files = sent["files"]
    assert sent["repo_type"] == "space" and {"app.py", "requirements.txt", "README.md"} <= files
    assert {"training/demo.py", "model/config.json", "model/model.safetensors", "model/README.md"} <= files
    assert sum(name.startswith("examples/") for name in files) == 4
    assert not any(name.startswith(("model/space/", "model/checkpoint-")) or "training_args" in name for name in files)
    with pytest.raises(hub.HubError, match="space/app.py missing"):
        hub.push_space(finished / "plots", "someone/demo")


def test_push_script_needs_a_target_and_a_token(finished):
    done = run_script("push.py", str(finished))
    assert done.returncode == 2 and "give --hub_model_id (the model), --space (its demo), or both" in done.stderr
    done = run_script("push.py", str(finished), "--space", "someone/demo")  # no token here
    assert done.returncode == 2 and "cannot push to the Hub: no valid token" in done.stderr, done.stderr


def test_the_page_answers_every_kind_of_image_and_names_what_it_cannot_read(finished, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio", reason="the demo's extra is not installed: pip install -e '.[demo]'")
    from training import demo

    page = demo.Demo(str(finished))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    for mode, name in (("RGB", "a.png"), ("L", "gray.png"), ("RGBA", "alpha.png"), ("P", "palette.gif")):
        Image.fromarray(pixels).convert(mode).save(tmp_path / name)
        labels, picture = page.classify(str(tmp_path / name))
        assert set(labels) == {"cat", "dog", "ship", "truck"} and sum(labels.values()) == pytest.approx(1, abs=1e-5)
        assert Image.open(picture).size[0] > 200
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(gr.Error, match="notes.txt is not an image this demo can read"):
        page.classify(str(tmp_path / "notes.txt"))
    monkeypatch.setattr(demo, "MAX_PIXELS", 1000)
    with pytest.raises(gr.Error, match="a.png is 30x40 pixels, more than this demo takes"):
        page.classify(str(tmp_path / "a.png"))
    with pytest.raises(gr.Error, match="Upload an image"):
        page.classify(None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_served(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the app exited: {server.stdout.read()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing served at {url} after {seconds} s")


def test_the_space_app_in_a_real_browser(finished, tmp_path):
    pytest.importorskip("gradio", reason="the demo's extra is not installed: pip install -e '.[demo]'")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (.ci/run installs it)")
    if not CHROMIUM.exists():
        pytest.skip("no Chromium at /usr/bin/chromium (Debian's chromium package; .ci/run installs it)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    # the Space's own app.py, importing the copied modules next to it (not this repository's)
    server = subprocess.Popen([sys.executable, str(finished / "space" / "app.py")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                              env={**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
                                   "PYTHONPATH": ""})
    image, text = tmp_path / "photo.png", tmp_path / "notes.txt"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(image)
    text.write_text("not an image")
    try:
        _wait_until_served(url, server)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page()
            for upload, answer in ((image, "labels"), (text, "message"), (image, "labels")):
                page.goto(url)
                page.locator("input[type=file]").first.set_input_files(str(upload))
                if answer == "message":
                    page.get_by_text("notes.txt is not an image this demo can read").wait_for(timeout=60_000)
                    continue
                label = page.get_by_test_id("label-output-value")
                label.wait_for(timeout=60_000)
                assert any(name in label.inner_text() for name in ("cat", "dog", "ship", "truck"))
                page.locator("#attention img").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
        assert server.poll() is None, "the server kept serving"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_demo_script_passes_every_flag_to_the_server(finished, monkeypatch, tmp_path):
    pytest.importorskip("gradio", reason="the demo's extra is not installed: pip install -e '.[demo]'")
    from training import demo

    script = load_script("demo")
    calls = []
    monkeypatch.setattr(demo, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert script.main(["--model", str(finished), "--port", "7999", "--host", "0.0.0.0", "--share", "true",
                        "--top_k", "2", "--examples", str(tmp_path), "--device", "cpu"]) == 0
    assert calls == [((str(finished), [tmp_path / "x.png"], 2, "cpu"),
                      {"server_name": "0.0.0.0", "server_port": 7999, "share": True})]
    calls.clear()
    assert script.main(["--model", str(finished)]) == 0  # a run folder offers its own examples
    (args, kwargs), = calls
    assert [p.name for p in args[1]] == sorted(p.name for p in (finished / "space" / "examples").iterdir())
    assert kwargs == {"server_name": "127.0.0.1", "server_port": 7860, "share": False}
    done = run_script("demo.py", "--model", str(tmp_path / "absent"))
    assert done.returncode == 2 and "no model could be loaded from it" in done.stderr
