"""Weights arrive through their libraries' own downloads, into their own caches; offline, nothing is tried.

A real HTTP server on 127.0.0.1 stands in for the Hugging Face hub (``HF_ENDPOINT``): it serves a tiny BERT and
timm's tiny ``test_vit`` in the hub's resolve layout and counts every request.
"""
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import pytest
from conftest import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Hub(http.server.ThreadingHTTPServer):
    def __init__(self, repos):
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.repos, self.requests = repos, []


class _HubHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _file(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, name = "/".join(parts[:2]), "/".join(parts[4:])
            path = self.server.repos.get(repo, None)
            if path is not None and (path / name).is_file():
                return path / name
        return None

    def _answer(self, body: bool):
        self.server.requests.append((self.command, self.path))
        f = self._file()
        if f is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = f.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802
        self._answer(False)

    def do_GET(self):  # noqa: N802
        self._answer(True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The stand-in hub with kit-test/tiny-bert and timm/test_vit.r160_in1k; stopped after the tests."""
    import timm
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizer
    root = tmp_path_factory.mktemp("hub")
    bert = root / "tiny-bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "dog", "bus",
                                               "traffic", "light"]) + "\n")
    BertTokenizer(str(bert / "vocab.txt")).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=10, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(bert)
    vit = root / "test_vit"
    vit.mkdir()
    model = timm.create_model("test_vit.r160_in1k", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(vit / "model.safetensors"))
    server = _Hub({"kit-test/tiny-bert": bert, "timm/test_vit.r160_in1k": vit})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, vit
    server.shutdown()
    server.server_close()


def _env(tmp_path, hub, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "MLC_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}", HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="10", **extra)
    return env


def _run(args, env, cwd):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def _params(tmp_path):
    f = tmp_path / "bert.yaml"
    f.write_text(f"name: weights_test\noutput_root: {tmp_path / 'outputs'}\n"
                 "text: {encoders: [bert], bert_model: kit-test/tiny-bert}\n")
    return f


def test_weights_command_fetches_through_the_hub_then_hits_the_cache(hub, tmp_path):
    server, _ = hub
    params = _params(tmp_path)
    env = _env(tmp_path, server)
    listed = _run(["-m", "mlc.weights", str(params), "--list"], env, tmp_path)
    assert listed.returncode == 1 and "BERT kit-test/tiny-bert" in listed.stdout and " no " in listed.stdout
    assert not server.requests                                  # listing looks at the cache only
    fetched = _run(["-m", "mlc.weights", str(params)], env, tmp_path)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert "every weight is present" in fetched.stdout
    assert any(p.endswith("/model.safetensors") for c, p in server.requests if c == "GET")
    cached = list((tmp_path / "hf").rglob("model.safetensors"))
    assert cached and cached[0].stat().st_size > 0
    n = len(server.requests)
    again = _run(["-m", "mlc.weights", str(params), "--list"], env, tmp_path)
    assert again.returncode == 0 and " yes " in again.stdout and len(server.requests) == n
    # the kit's own use (the label embeddings) reads the cache offline: no request at all
    code = ("from mlc.modeling.embeddings import bert_token_embeddings; "
            "print(bert_token_embeddings(['cat', 'traffic light'], 'kit-test/tiny-bert').shape)")
    offline = _run(["-c", code], {**env, "MLC_OFFLINE": "1"}, tmp_path)
    assert offline.returncode == 0, offline.stderr[-2000:]
    assert "(2, 16)" in offline.stdout and len(server.requests) == n


def test_offline_tries_no_network_and_says_what_to_fetch(hub, tmp_path):
    server, _ = hub
    n = len(server.requests)
    env = _env(tmp_path, server, MLC_OFFLINE="1")
    code = ("from mlc.modeling.embeddings import bert_token_embeddings; "
            "bert_token_embeddings(['cat'], 'kit-test/tiny-bert')")
    done = _run(["-c", code], env, tmp_path)
    assert done.returncode != 0
    assert "not in the local cache (offline: MLC_OFFLINE or HF_HUB_OFFLINE is set)" in done.stderr
    assert "python -m mlc.weights PARAMS_FILE" in done.stderr
    listed = _run(["-m", "mlc.weights", str(_params(tmp_path))], env, tmp_path)
    assert listed.returncode == 1 and "offline" in listed.stderr and "missing: BERT" in listed.stderr
    code = "from mlc.modeling.backbones import _timm_model; _timm_model('test_vit.r160_in1k', True, None)"
    timm_offline = _run(["-c", code], env, tmp_path)
    assert timm_offline.returncode != 0 and "timm/test_vit.r160_in1k" in timm_offline.stderr
    assert len(server.requests) == n                            # not one request


def test_timm_backbone_weights_come_through_timms_own_download(hub, tmp_path):
    server, vit = hub
    code = ("from mlc.modeling.backbones import _timm_model; "
            "m = _timm_model('test_vit.r160_in1k', True, None); "
            "print(float(sum(v.double().sum() for v in m.state_dict().values())))")
    env = _env(tmp_path, server)
    first = _run(["-c", code], env, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    import timm
    from safetensors.torch import load_file
    served = load_file(str(vit / "model.safetensors"))
    model = timm.create_model("test_vit.r160_in1k", pretrained=False, num_classes=0, global_pool="")
    model.load_state_dict(served, strict=False)
    expected = float(sum(v.double().sum() for v in model.state_dict().values()))
    assert float(first.stdout.strip()) == pytest.approx(expected, rel=1e-9)
    n = len(server.requests)
    second = _run(["-c", code], {**env, "MLC_OFFLINE": "1"}, tmp_path)     # from the cache, offline
    assert second.returncode == 0 and len(server.requests) == n


def test_every_paper_params_file_lists_its_weights_offline():
    """Each paper and released params file says what it needs without touching the network."""
    env = {**os.environ, "MLC_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "params").glob("*/*.yaml"))
    code = ("import sys; from mlc.config.params import load_params; from mlc.runs.weights import needed_weights\n"
            "for f in sys.argv[1:]:\n"
            "    w = needed_weights(load_params(f)); assert w, f; print(f, len(w))")
    done = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == len(files)


def test_what_the_paper_configs_need():
    from mlc.config.params import load_params
    from mlc.runs.weights import needed_weights

    def needs(path):
        return {w.what: (w.library, w.source) for w in needed_weights(load_params(ROOT / path))}
    sgre = needs("params/sgre/coco_r101_448.yaml")      # torchvision's V1 file, BERT for the label embeddings
    assert sgre["sgre backbone resnet101_bn"] == ("torchvision", "https://download.pytorch.org/models/resnet101-63fe2227.pth")
    assert sgre["BERT bert-base-uncased (label embeddings)"][0] == "transformers"
    mkt = needs("params/released/mkt_nuswide_stage2.yaml")
    assert mkt["CLIP ViT-B-16-quickgelu (openai)"][0] == "open_clip"
    assert {w for w, (lib, _) in mkt.items() if lib == "by hand"} == {"mkt_prompt stage-1 image encoder",
                                                                     "released MKT stage 2 (NUS-WIDE)"}
    assert set(needs("params/released/q2l_coco_cvt_w24_384.yaml")) == {"released Q2L-CvT_w24-384",
                                                                      "released Q2L-CvT_w24-384 config"}
    assert needs("params/q2l/coco_cvt_w24_384.yaml")["q2l backbone cvt_w24_384"] == (
        "transformers", "https://huggingface.co/microsoft/cvt-w24-384-22k")
