"""./run_lab.sh serves the repository and runs the kit's kernel and terminals: a real server on 127.0.0.1, driven
through its REST API and the kernel and terminal websockets, then stopped."""
import importlib.metadata
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

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


BIN = Path(sys.executable).parent         # the environment's bin/: its mlc, python, torchrun


def _without_bin(path: str) -> str:
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(BIN))


def _messages(ws, timeout):
    """The JSON messages of a websocket until ``timeout`` seconds have passed. Each wait is short: the server's
    pings (every 30 s) are answered inside ``recv``, which would otherwise never time out."""
    import websocket
    deadline = time.time() + timeout
    while time.time() < deadline:
        ws.settimeout(min(5.0, max(0.1, deadline - time.time())))
        try:
            yield json.loads(ws.recv())
        except websocket.WebSocketTimeoutException:
            continue


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """``./run_lab.sh`` on a free port with a token, in a private Jupyter path (where its set-up registers the kit's
    kernel), started the way a user starts it: from a shell whose PATH lacks the environment's bin/."""
    tmp = tmp_path_factory.mktemp("lab")
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp / "data"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_PATH": str(tmp / "data")}
    if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():   # the kit's .venv, which env.sh picks itself
        for var in ("VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV"):
            env.pop(var, None)
        env["PATH"] = _without_bin(env.get("PATH", ""))
    token, port = secrets.token_hex(16), _free_port()
    server = subprocess.Popen([str(ROOT / "run_lab.sh"), "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
                               f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False"],
                              env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        yield SimpleNamespace(base=base, token=token, port=port, env=env)
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
        out = []
        for msg in _messages(ws, timeout):
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
    base, token = lab.base, lab.token
    listing = _get(f"{base}/api/contents/notebooks", token)
    names = {item["name"] for item in listing["content"]}
    assert {"01_data_preparation.ipynb", "10_train_q2l.ipynb", "20_evaluate.ipynb"} <= names
    nb = _get(f"{base}/api/contents/notebooks/10_train_q2l.ipynb", token)
    assert nb["content"]["metadata"]["kernelspec"]["name"] == "mlc-kit"      # the notebooks open in the kit kernel
    spec = _get(f"{base}/api/kernelspecs", token)["kernelspecs"]["mlc-kit"]["spec"]   # registered by env.sh
    kit_bin = Path(spec["argv"][0]).parent
    assert kit_bin.resolve() == BIN.resolve() and spec["env"]["PATH"] == f"{kit_bin}:${{PATH}}", spec
    kernel = _post(f"{base}/api/kernels", token, {"name": "mlc-kit"})
    out = _execute(lab.port, token, kernel["id"], f"import shutil, mlc\nfrom mlc.config.params import load_params\n"
                                                  f"p = load_params({str(ROOT / 'params/toy_ci.yaml')!r})\n"
                                                  f"print(mlc.__name__, p.name, sorted(p.methods))\n"
                                                  f"print(shutil.which('mlc'))")
    methods = ['mkt', 'mkt_prompt', 'q2l', 'q2l_linear', 'qks', 'salgl', 'salgl_one_scene', 'sgre']
    assert out.startswith(f"mlc toy_ci {methods}"), out
    assert Path(out.splitlines()[-1]).parent.resolve() == BIN.resolve(), out   # `!mlc train ...` in a notebook
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}),
                                timeout=10) as r:
        assert r.status == 200 and b"JupyterLab" in r.read()


@pytest.mark.slow
def test_the_lab_opens_at_the_root_with_the_notebooks_a_click_away(lab):
    base, token = lab.base, lab.token
    with urllib.request.urlopen(urllib.request.Request(f"{base}/", headers={"Authorization": f"token {token}"}),
                                timeout=10) as r:
        assert urllib.parse.urlsplit(r.geturl()).path == "/lab/tree/notebooks"   # the file browser opens there
        assert r.status == 200 and b"JupyterLab" in r.read()
    root = {item["name"] for item in _get(f"{base}/api/contents/", token)["content"]}
    assert {"notebooks", "params", "lib", "README.md"} <= root, root
    params = {item["name"] for item in _get(f"{base}/api/contents/params", token)["content"]}
    assert {"toy.yaml", "toy_ci.yaml"} <= params, params                   # what the exercises pass to `mlc train`
    assert "methods:" in _get(f"{base}/api/contents/params/toy.yaml", token)["content"]


_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")    # colours, bracketed paste, titles


@pytest.mark.slow
def test_a_lab_terminal_runs_the_kit_s_mlc_at_the_root(lab):
    """The terminal Lab opens (POST /api/terminals) and its websocket, as the Lab's page drives them: bash reading
    scripts/lab_bashrc, at the root, where `mlc` is the kit's."""
    import websocket
    base, token = lab.base, lab.token
    version = importlib.metadata.version("mlc-kit")
    printed = re.compile(rf"^mlc-kit {re.escape(version)}$", re.M)
    name = _post(f"{base}/api/terminals", token, {})["name"]
    assert name in {t["name"] for t in _get(f"{base}/api/terminals", token)}
    ws = websocket.create_connection(f"ws://127.0.0.1:{lab.port}/terminals/websocket/{name}?token={token}",
                                     timeout=30)
    try:
        ws.send(json.dumps(["stdin", 'echo "MLC[$(command -v mlc)][$(pwd)][$(tr "\\0" " " </proc/$$/cmdline '
                                     '2>/dev/null || ps -o args= -p $$)]"; mlc --version\r']))
        out = ""
        for msg in _messages(ws, 60):
            if msg[0] == "stdout":
                out += _ESCAPES.sub("", msg[1])
            if msg[0] == "disconnect" or printed.search(out):
                break
    finally:
        ws.close()
        req = urllib.request.Request(f"{base}/api/terminals/{name}", method="DELETE",
                                     headers={"Authorization": f"token {token}"})
        urllib.request.urlopen(req, timeout=10).close()
    found = re.search(r"^MLC\[(/[^\]]*)\]\[(/[^\]]*)\]\[([^\]]*)\]$", out, re.M)   # the echo's output, not its input
    assert found, out[-2000:]
    assert Path(found.group(1)).parent.resolve() == BIN.resolve(), out[-2000:]   # `which mlc` finds the kit's
    assert Path(found.group(2)).resolve() == ROOT.resolve(), out[-2000:]    # `mlc train params/toy.yaml` resolves
    rcfile = re.search(r"\bbash --rcfile (\S+) -i\b", found.group(3))          # the shell run_lab.sh names
    assert rcfile and Path(rcfile.group(1)).resolve() == (ROOT / "scripts" / "lab_bashrc").resolve(), found.group(3)
    assert printed.search(out), out[-2000:]                                # `mlc --version`: the installed kit's
    assert name not in {t["name"] for t in _get(f"{base}/api/terminals", token)}


def test_lab_terminals_read_the_user_s_bashrc_then_put_the_kit_first(tmp_path):
    """scripts/lab_bashrc, the terminals' start-up file: a ~/.bashrc that puts its own bin/ (an `mlc` of its own,
    a conda base) first still runs, and the kit's bin/ comes first after it."""
    home = tmp_path / "home"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "mlc").write_text("#!/bin/sh\necho not the kit\n")
    (home / "bin" / "mlc").chmod(0o755)
    (home / ".bashrc").write_text('export PATH="$HOME/bin:$PATH"\nexport FROM_BASHRC=yes\n')
    env = {**os.environ, "HOME": str(home), "MLC_BIN": str(BIN), "PATH": _without_bin(os.environ.get("PATH", ""))}
    show = 'echo "[$(command -v mlc)][$FROM_BASHRC]"'

    def run(*args):
        r = subprocess.run(["bash", *args, "-i", "-c", show], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert run() == f"[{home / 'bin' / 'mlc'}][yes]"                       # a plain bash: the user's mlc
    assert run("--rcfile", str(ROOT / "scripts" / "lab_bashrc")) == f"[{BIN / 'mlc'}][yes]"


@pytest.mark.slow
def test_the_kit_kernel_puts_its_environment_first_on_path_whichever_jupyter_starts_it(lab, monkeypatch):
    """A Jupyter from elsewhere (`jupyter lab` from conda base: no kit bin/ on its PATH) starts the kernel from the
    spec that env.sh registered, which puts the environment's bin/ first on the kernel's PATH."""
    from jupyter_client.manager import start_new_kernel
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_PATH", "JUPYTER_RUNTIME_DIR"):
        monkeypatch.setenv(var, lab.env[var])
    env = {**lab.env, "PATH": _without_bin(os.environ.get("PATH", "")) or "/usr/bin:/bin"}
    km, kc = start_new_kernel(kernel_name="mlc-kit", env=env, startup_timeout=60)
    try:
        out = []
        kc.execute_interactive("import subprocess\nprint(subprocess.run(['mlc', '--version'], capture_output=True, "
                               "text=True, check=True).stdout)", timeout=60,
                               output_hook=lambda m: out.append(m["content"].get("text", "")))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "".join(out).startswith("mlc-kit "), out
