"""Standard weights fetched on first use, tested against an HTTP server on 127.0.0.1 that the
tests start: a right-architecture file goes into torch's hub cache and loads; a corrupted file,
a server that drops mid-file or answers 404, and offline mode leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from gantk.errors import GantkError
from gantk.io import weights
from gantk.metrics.features import fid_inception_architecture, load_feature_net

INCEPTION = weights.STANDARD_WEIGHTS["inception-fid"].filename


class Server:
    """Serves ``files`` (name -> bytes); names in ``drop`` stop halfway, after promising all."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server calls
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in server.drop else body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch, torch_hub):
    srv = Server()
    monkeypatch.setenv("GANTK_WEIGHTS_URL", srv.url)
    monkeypatch.delenv("GANTK_OFFLINE")
    yield srv
    srv.close()


def _serve(server: Server, monkeypatch, name: str, body: bytes, claimed: bytes | None = None):
    """Serve ``body`` as ``name``; the expected hash is that of ``claimed`` (default: body)."""
    server.files[name] = body
    prefix = hashlib.sha256(claimed if claimed is not None else body).hexdigest()[:8]
    real = weights.expected_hash_prefix
    monkeypatch.setattr(weights, "expected_hash_prefix",
                        lambda w: prefix if w.filename == name else real(w))  # fmt: skip


def _inception_bytes() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(fid_inception_architecture().state_dict(), buffer)
    return buffer.getvalue()


def test_first_use_downloads_verifies_and_loads(server, monkeypatch, torch_hub, capsys) -> None:
    body = _inception_bytes()
    _serve(server, monkeypatch, INCEPTION, body)
    net = load_feature_net("inception")
    target = torch_hub / INCEPTION
    assert net.weights == str(target) and target.read_bytes() == body
    assert f"downloaded {INCEPTION}" in capsys.readouterr().err
    assert sorted(p.name for p in torch_hub.iterdir()) == [INCEPTION]  # no partial file
    feats = net(torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8))
    assert feats.shape == (1, 2048)
    load_feature_net("inception")  # second use: from the cache, no request
    assert server.requests == [INCEPTION]


def test_a_corrupted_file_is_refused_and_not_kept(server, monkeypatch, torch_hub) -> None:
    _serve(server, monkeypatch, INCEPTION, b"not the weights" * 100, claimed=b"the real ones")
    with pytest.raises(GantkError, match=r"has SHA-256 [0-9a-f]{16}\.\.\., not [0-9a-f]{8}\.\.\."):
        load_feature_net("inception")
    assert list(torch_hub.iterdir()) == []


def test_a_dropped_connection_leaves_nothing(server, monkeypatch, torch_hub) -> None:
    _serve(server, monkeypatch, INCEPTION, b"x" * 100_000)
    server.drop.add(INCEPTION)
    with pytest.raises(GantkError, match=r"could not download|stopped after"):
        load_feature_net("inception")
    assert list(torch_hub.iterdir()) == []


def test_not_on_the_server(server, torch_hub) -> None:
    with pytest.raises(GantkError, match=r"could not download .* \(Not Found\); fetch .*/mirror/"):
        load_feature_net("inception")
    assert list(torch_hub.iterdir()) == []


def test_offline_names_file_and_url_and_asks_nothing(server, monkeypatch, torch_hub) -> None:
    monkeypatch.setenv("GANTK_OFFLINE", "1")
    with pytest.raises(GantkError, match=rf"{INCEPTION}.*GANTK_OFFLINE is set: fetch .*/mirror/"):
        load_feature_net("inception")
    assert server.requests == [] and list(torch_hub.iterdir()) == []


def test_weights_fetch_and_list_commands(cli, server, monkeypatch, torch_hub: Path) -> None:
    name = weights.STANDARD_WEIGHTS["alexnet"].filename
    _serve(server, monkeypatch, name, b"alexnet bytes" * 1000)
    result = cli("weights", "fetch", "alexnet", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["weights"] == [
        {"key": "alexnet", "path": str(torch_hub / name), "downloaded": True}
    ]
    again = json.loads(cli("weights", "fetch", "alexnet", "--json").stdout)["weights"][0]
    assert again["downloaded"] is False and server.requests == [name]
    listed = json.loads(cli("weights", "list", "--json").stdout)["weights"]
    assert {w["key"]: w["found"] for w in listed}["alexnet"] == str(torch_hub / name)
    assert "no standard weights named 'resnet'" in cli("weights", "fetch", "resnet").stderr


def test_every_standard_file_names_its_hash() -> None:
    for weight in weights.STANDARD_WEIGHTS.values():
        assert len(weights.expected_hash_prefix(weight)) >= 8, weight.filename
