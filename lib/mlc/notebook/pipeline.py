"""Execute the notebooks through papermill for one params file.

    python -m mlc.pipeline params/toy.yaml [--jobs N]      (what run_all.sh calls)

A training notebook ``1x_train_<method>`` runs only when the params file configures that method.  A
notebook starts once the notebooks it needs have finished: those its metadata names (``"mlc": {"needs":
["01"]}``, by number), or else every notebook before it.  Up to ``--jobs`` notebooks run at once, each in
its own process with cores / jobs threads (``OMP_NUM_THREADS``; the same for every notebook, so that a run's
numbers do not depend on what ran beside what): the toy models are too small for two threads to do twice the
work of one (``benchmarks/toy_threads.py``: a toy Q2L step takes 94 ms on 2 threads, 159 ms on 1), so two
notebooks on one core each finish sooner than one after the other on both.  The default is one job per
core, up to as many notebooks as can run together, without a GPU; one job with a GPU (trainings would share
its memory); ``--jobs 1`` runs them in name order on every core.  Executed copies go to
``outputs/<run name>/notebooks/``.  The first failing notebook stops the run (the others running are stopped
too) with exit code 1 and a message naming it and its executed copy.  At the end every executed notebook is
exported to HTML (``outputs/<run name>/html/``, with an ``index.html``), so a whole run can be browsed without Jupyter.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlc.config.params import ParamsError, load_params, parse_set_args
from mlc.core.cpu import usable_cores
from mlc.core.io import atomic_write_text
from mlc.core.progress import PROGRESS_ENV, duration
from mlc.notebook.run_page import run_page
from mlc.notebook.session import repo_root


def notebooks_for(params, root: Path) -> list[Path]:
    """The notebooks of a run in name order; a training notebook only when the params configure its method."""
    out = []
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        m = re.match(r"\d\d_train_(\w+)\.ipynb$", nb.name)
        if m and m.group(1) not in params.methods:
            continue
        out.append(nb)
    return out


def notebook_needs(nb: Path, notebooks: list[Path]) -> list[Path]:
    """The notebooks among ``notebooks`` that must finish before ``nb`` starts: those its metadata names
    (``"mlc": {"needs": ["01", "11"]}``, by number; one the run leaves out is not waited for), else every
    notebook before it."""
    meta = json.loads(nb.read_text(encoding="utf-8")).get("metadata", {}).get("mlc", {})
    if "needs" not in meta:
        return [other for other in notebooks if other.name < nb.name]
    numbers = {str(n) for n in meta["needs"]}
    return [other for other in notebooks if other.name[:2] in numbers]


def default_jobs(needs: dict[Path, list[Path]]) -> int:
    """One notebook per CPU core, up to as many as can ever run together (the widest level of the graph of
    needs); one at a time with a GPU (the trainings would share its memory)."""
    try:
        import torch
        if torch.cuda.is_available():
            return 1
    except ImportError:
        pass
    return max(1, min(usable_cores(), widest_level(needs)))


def widest_level(needs: dict[Path, list[Path]]) -> int:
    """The most notebooks at one depth of the graph of needs (depth: the longest chain of needs before it)."""
    depth: dict[Path, int] = {}
    for nb in sorted(needs, key=lambda n: n.name):          # needs come earlier in name order
        depth[nb] = 1 + max((depth[n] for n in needs[nb]), default=-1)
    levels = list(depth.values())
    return max((levels.count(d) for d in set(levels)), default=1)


def _params_with_overrides(params_path: Path, params, set_args: list[str], output_root: str | None) -> Path:
    """A params file for the notebooks that extends ``params_path`` with the command-line overrides."""
    import yaml
    over, _ = parse_set_args(set_args)
    if output_root:
        over["output_root"] = str(Path(output_root).resolve())
    path = params.run_dir / "params_overrides.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, f"# {params_path} with the overrides of the command line\n" +
                      yaml.safe_dump({"extends": str(params_path), "base_dir": params.base_dir, **over},
                                     sort_keys=False))
    return path


def run_all(params_file: str | Path, only: list[str] | None = None, set_args: list[str] | None = None,
            output_root: str | None = None, jobs: int | None = None) -> int:
    """Execute the notebooks for one params file (see the module docstring); returns the exit code."""
    root = repo_root()
    params_path = Path(params_file).resolve()
    try:
        params = load_params(params_path, set_args=set_args, output_root=output_root)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    notebooks = notebooks_for(params, root)
    if only:
        chosen = [nb for nb in notebooks if any(o in nb.name for o in only)]
        unmatched = [o for o in only if not any(o in nb.name for nb in notebooks)]
        if unmatched:
            print(f"error: --only {' '.join(unmatched)} matches no notebook of this run "
                  f"({', '.join(nb.name for nb in notebooks)})", file=sys.stderr)
            return 2
        notebooks = chosen
    if set_args or output_root:
        params_path = _params_with_overrides(params_path, params, set_args or [], output_root)
    out_dir = params.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    needs = {nb: notebook_needs(nb, notebooks) for nb in notebooks}
    jobs = max(1, jobs or default_jobs(needs))
    t_all = time.time()
    failed = _run_graph(notebooks, needs, jobs, root, out_dir, params_path, t_all)
    if failed is not None:
        nb, target, error = failed
        print(f"\nFAILED: notebook {nb.relative_to(root)}\n  executed copy (with the error): {target}\n"
              f"  {error}", file=sys.stderr)
        return 1
    print(f"all {len(notebooks)} notebooks done in {time.time() - t_all:.0f} s; outputs in {params.run_dir}")
    index = export_html(out_dir, params.run_dir / "html", checkout=root)
    print(f"HTML: {index}")
    return 0


def _run_graph(notebooks: list[Path], needs: dict, jobs: int, root: Path, out_dir: Path, params_path: Path,
               t_all: float):
    """Run the notebooks, each once the ones it needs are done, at most ``jobs`` at a time; returns None,
    or (notebook, executed copy, error text) of the first that failed (the others running are stopped)."""
    pending, running, done = list(notebooks), {}, set()
    cores = usable_cores()
    lock = threading.Lock()
    with _children_stopped_with_this_process(running):
        return _run_ready(pending, running, done, needs, jobs, cores, lock, root, out_dir, params_path, t_all)


@contextlib.contextmanager
def _children_stopped_with_this_process(running: dict):
    """SIGTERM (or SIGHUP) to run_all alone, or any exit, stops the notebook processes it started: without this
    they trained on and wrote results after their parent had gone, beside a rerun."""
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        def stop(signum, frame):
            raise SystemExit(128 + signum)
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            # a signal the user chose to ignore stays ignored: under nohup, closing the terminal must not stop it
            if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        alive = [job["proc"] for job in running.values() if job["proc"].poll() is None]
        for proc in alive:
            proc.terminate()            # the notebook process leaves through papermill, which stops its kernel
        for proc in alive:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_ready(pending: list, running: dict, done: set, needs: dict, jobs: int, cores: int, lock: threading.Lock,
               root: Path, out_dir: Path, params_path: Path, t_all: float):
    while pending or running:
        ready = [nb for nb in pending if all(n in done for n in needs[nb])]
        while ready and len(running) < jobs:
            nb = ready.pop(0)
            pending.remove(nb)
            # the same share for every notebook, whatever runs beside it: the thread count changes the order of
            # the CPU's sums and so the last digits of a training, which must not depend on the timing
            threads = max(1, cores // jobs)
            running[nb] = _start(nb, out_dir / nb.name, root, params_path, threads, lock)
            with lock:
                print(f">> {nb.relative_to(root)} ({threads} thread{'s' * (threads > 1)}; "
                      f"{duration(time.time() - t_all)} so far)", flush=True)
        if not running:
            raise RuntimeError(f"notebooks waiting for notebooks that never run: {[nb.name for nb in pending]}")
        time.sleep(0.2)
        for nb, job in list(running.items()):
            if job["proc"].poll() is None:
                continue
            for r in job["readers"]:
                r.join()
            del running[nb]
            target = out_dir / nb.name
            if job["proc"].returncode != 0:
                for other in running.values():
                    other["proc"].terminate()
                for other in running.values():
                    other["proc"].wait()
                error = (_executed_error(target) or (job["stderr"][-1] if job["stderr"] else None)
                         or f"the notebook's process exited with code {job['proc'].returncode}")
                return nb, target, error
            done.add(nb)
            with lock:
                print(f"   {nb.name} done in {time.time() - job['t0']:.0f} s -> {target}", flush=True)
    return None


def _start(nb: Path, target: Path, root: Path, params_path: Path, threads: int, lock: threading.Lock) -> dict:
    """One notebook in its own process (``python -m mlc.notebook.execute``, which imports papermill and nothing
    of torch: about 2.5 s of CPU to start, where ``mlc.pipeline --execute`` took about 6.5) with ``threads`` CPU
    threads; its progress lines are printed as they come."""
    env = {**os.environ, PROGRESS_ENV: "lines", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mlc.notebook.execute", str(nb), str(target), str(params_path)],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job = {"proc": proc, "t0": time.time(), "stderr": []}

    def relay():
        for line in proc.stdout:
            with lock:
                print(line.rstrip("\n"), flush=True)

    def keep_errors():
        for line in proc.stderr:
            if line.strip():
                job["stderr"] = [*job["stderr"][-50:], line.rstrip("\n")]

    readers = [threading.Thread(target=f, daemon=True) for f in (relay, keep_errors)]
    for r in readers:
        r.start()
    job["readers"] = readers
    return job


def _executed_error(target: Path) -> str | None:
    """The error of the failed cell in an executed notebook ("Name: message"), or None."""
    try:
        nb = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}".replace("\n", "\n  ")
    return None


def export_html(notebook_dir: Path, html_dir: Path, checkout: Path | None = None) -> Path:
    """Every executed notebook as a standalone HTML page (figures embedded), and the run's front page
    ``index.html`` (:mod:`mlc.notebook.run_page`)."""
    from nbconvert import HTMLExporter
    html_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter()
    pages = sorted(notebook_dir.glob("*.ipynb"))
    for nb in pages:
        body, _ = exporter.from_filename(str(nb))
        atomic_write_text(html_dir / f"{nb.stem}.html", body)
    index = html_dir / "index.html"
    atomic_write_text(index, run_page(notebook_dir.parent, pages, checkout))
    return index
