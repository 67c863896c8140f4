"""Open Images image downloader: parallel, retried, resumable, resized to a shorter side of 256.

    python -m mlc.data.datasets.download <images.csv> <out dir>/<split> [--workers 16]

Reads the images CSV of a split (``<split>-images-with-labels-with-rotation.csv``: ImageID, OriginalURL,
...), fetches every URL with a few retries, shrinks each image so that its shorter side is at most 256 px
(aspect kept), and saves ``<out>/<ImageID[:2]>/<ImageID>.jpg`` (train is sharded; ``--flat`` for test).
Files are written to a temporary name and renamed, so an interrupted run leaves no half image and a
rerun downloads only what is missing.  Failures (URL, error) are written to ``<out>/failures.csv``.
(The official download.py starts every worker at row 80,000 of its slice, a leftover resume hack; the
kit does not.)
"""
from __future__ import annotations

import argparse
import io
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image

from mlc.core.progress import bar as progress_bar
from mlc.data.datasets.common import DatasetFormatError, require

USER_AGENT = "mlc-kit-downloader/1.0 (+https://github.com/mlc-kit)"


@dataclass
class DownloadReport:
    downloaded: int
    skipped: int
    failed: list[tuple[str, str, str]]          # (ImageID, URL, error)


def target_path(out_dir: Path, image_id: str, flat: bool) -> Path:
    """Where an image is saved: sharded by the id's first two characters unless ``flat``."""
    return out_dir / f"{image_id}.jpg" if flat else out_dir / image_id[:2] / f"{image_id}.jpg"


def fetch_and_save(url: str, dest: Path, short_side: int = 256, retries: int = 3, timeout: float = 30.0,
                   backoff: float = 0.5) -> None:
    """Download one image with retries (none on a 404), resize its shorter side, write it atomically."""
    last = None
    for attempt in range(retries):
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = resp.read()
            img = Image.open(io.BytesIO(data)).convert("RGB")
            w, h = img.size
            if min(w, h) > short_side:
                scale = short_side / min(w, h)
                img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            img.save(tmp, "JPEG", quality=90)
            os.replace(tmp, dest)
            return
        except urllib.error.HTTPError as e:
            last = e
            if 400 <= e.code < 500 and e.code != 429:    # a missing image will not come back
                break
        except (urllib.error.URLError, OSError, ValueError) as e:
            last = e
        time.sleep(backoff * (2 ** attempt))
    raise RuntimeError(f"{type(last).__name__}: {last}")


def download_images(images_csv: str | Path, out_dir: str | Path, workers: int = 16, flat: bool = False,
                    short_side: int = 256, retries: int = 3, timeout: float = 30.0, limit: int | None = None,
                    progress: bool = True, backoff: float = 0.5) -> DownloadReport:
    """Download every image of an Open Images CSV in parallel (resumable); failures go to failures.csv."""
    images_csv, out_dir = require(Path(images_csv)), Path(out_dir)
    try:
        df = pd.read_csv(images_csv, usecols=["ImageID", "OriginalURL"], dtype=str)
    except ValueError as e:
        raise DatasetFormatError(f"{images_csv}: expected columns ImageID and OriginalURL ({e})") from None
    if limit is not None:
        df = df.head(limit)
    todo = [(i, u) for i, u in zip(df["ImageID"], df["OriginalURL"]) if not target_path(out_dir, i, flat).is_file()]
    skipped = len(df) - len(todo)
    failed = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(fetch_and_save, u, target_path(out_dir, i, flat), short_side, retries, timeout,
                               backoff): (i, u) for i, u in todo}
        for fut in progress_bar(as_completed(futures), total=len(futures), desc="download", disable=not progress):
            try:
                fut.result()
            except Exception as e:
                failed.append((*futures[fut], str(e)))
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(sorted(failed), columns=["ImageID", "OriginalURL", "error"]).to_csv(out_dir / "failures.csv",
                                                                                  index=False)
    return DownloadReport(len(todo) - len(failed), skipped, failed)


def main(argv=None) -> None:
    """``python -m mlc.data.datasets.download IMAGES_CSV OUT_DIR``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images_csv")
    ap.add_argument("out_dir")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--flat", action="store_true", help="no shard folders (the official test layout)")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--limit", type=int)
    args = ap.parse_args(argv)
    r = download_images(args.images_csv, args.out_dir, args.workers, args.flat, retries=args.retries,
                        limit=args.limit)
    print(f"downloaded {r.downloaded}, already there {r.skipped}, failed {len(r.failed)} "
          f"(see {Path(args.out_dir) / 'failures.csv'})")


if __name__ == "__main__":
    main()
