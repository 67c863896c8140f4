"""JupyterLab serves the notebooks and runs the kit's kernel: a real server on 127.0.0.1, driven through its
REST API and the kernel websocket, then stopped."""
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _post(url, token, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on a free port with a token, the kit's kernel registered in a private Jupyter path."""
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_PATH": str(tmp_path / "data")}
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "mlc-kit",
                    "--display-name", "Python (mlc-kit)"], env=env, check=True, capture_output=True)
    token, port = secrets.token_hex(16), _free_port()
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1",
                               f"--port={port}", f"--IdentityProvider.token={token}",
                               f"--ServerApp.root_dir={ROOT / 'notebooks'}", "--ServerApp.open_browser=False"]
                              + (["--allow-root"] if os.geteuid() == 0 else []),
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {server.stdout.read()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield base, token, port
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _execute(port, token, kernel_id, code, timeout=120) -> str:
    """Run ``code`` in a kernel over the server's websocket; returns its stdout (fails on an error)."""
    import websocket
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}",
                                     timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({"header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                                       "msg_type": "execute_request", "version": "5.3"},
                            "parent_header": {}, "metadata": {}, "channel": "shell",
                            "content": {"code": code, "silent": False, "store_history": False,
                                        "user_expressions": {}, "allow_stdin": False}}))
        out, deadline = [], time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                pytest.fail("kernel error: " + "\n".join(msg["content"]["traceback"])[-2000:])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
        pytest.fail("no reply from the kernel")
    finally:
        ws.close()


@pytest.mark.slow
def test_jupyterlab_lists_the_notebooks_and_runs_the_kit_kernel(lab):
    base, token, port = lab
    listing = _get(f"{base}/api/contents/", token)
    names = {item["name"] for item in listing["content"]}
    assert {"01_data_preparation.ipynb", "10_train_q2l.ipynb", "20_evaluate.ipynb"} <= names
    nb = _get(f"{base}/api/contents/10_train_q2l.ipynb", token)
    assert nb["content"]["metadata"]["kernelspec"]["name"] == "mlc-kit"      # the notebooks open in the kit kernel
    assert "mlc-kit" in _get(f"{base}/api/kernelspecs", token)["kernelspecs"]
    kernel = _post(f"{base}/api/kernels", token, {"name": "mlc-kit"})
    out = _execute(port, token, kernel["id"], f"import mlc\nfrom mlc.config.params import load_params\n"
                                              f"p = load_params({str(ROOT / 'params/toy_ci.yaml')!r})\n"
                                              f"print(mlc.__name__, p.name, sorted(p.methods))")
    methods = ['mkt', 'mkt_prompt', 'q2l', 'q2l_linear', 'qks', 'salgl', 'salgl_one_scene', 'sgre']
    assert out.startswith(f"mlc toy_ci {methods}"), out
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}),
                                timeout=10) as r:
        assert r.status == 200 and b"JupyterLab" in r.read()
