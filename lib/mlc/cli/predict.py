"""``mlc predict`` / ``python -m mlc.predict PARAMS [--method M] IMAGE ... [--checkpoint PATH]``: the top labels
of images of one's own with their scores, from a trained run (the run folder PARAMS names) or from weights in a
file (a kit checkpoint or the authors' released weights, as ``mlc evaluate`` takes them).

    mlc predict params/toy.yaml --method q2l photo.jpg holiday/ --top-k 3
    mlc predict params/toy.yaml --method qks photo.jpg --threshold 0.5 --heatmaps maps/ --json
    mlc predict params/released/q2l_coco_r101_448.yaml photo.jpg

Scores are sigmoid probabilities.  ``--heatmaps DIR`` writes one PNG per image and label: the label's map (the
model's ``attention`` output, docs/models.md) over the image.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlc.cli.args import add_params_arguments, add_predict_arguments, parse
from mlc.cli.load import load_from_args
from mlc.config.params import ParamsError, RunParams
from mlc.engine import stage
from mlc.engine.loop import pick_device
from mlc.engine.rundir import finished_methods
from mlc.evaluation.predict import Predictor, expand_images, prediction_records, save_heatmaps
from mlc.runs.checkpoints import method_name
from mlc.runs.resolve import method_params, no_such_method


def main(argv=None) -> int:
    """``python -m mlc.predict PARAMS [--method M] IMAGE ...`` (the same as ``mlc predict``)."""
    ap = argparse.ArgumentParser(prog="python -m mlc.predict", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_params_arguments(ap)
    add_predict_arguments(ap)
    return run_predict(parse(ap, argv))


def run_predict(args) -> int:
    """Predict for the parsed arguments and print the result; a clear error is one line on stderr (exit 1; 2 for
    the params)."""
    try:
        # paths of the command line are relative to where it runs (loading the params moves to their checkout)
        items = expand_images(args.images)
        checkpoint = str(Path(args.checkpoint).expanduser().resolve()) if args.checkpoint else None
        heatmaps = Path(args.heatmaps).expanduser().resolve() if args.heatmaps else None
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        params = load_from_args(args)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        method = _method(params, args.method, checkpoint)
        device = _device(args.device if args.device != "auto" else method_params(params, method).train.device)
        predictor = Predictor.from_run(params, method, device=device, checkpoint=checkpoint)
        predictions = predictor.predict(items, top_k=args.top_k or None, threshold=args.threshold)
        maps = save_heatmaps(predictions, heatmaps) if heatmaps is not None else None
    except (OSError, ValueError, KeyError, stage.StageNotFinishedError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    weights = {k: predictor.weights.get(k) for k in ("kind", "checkpoint", "sha256")}
    if args.json:
        print(json.dumps({"params": str(params.source), "method": method, "weights": weights,
                          "predictions": prediction_records(predictions, maps)}, indent=1))
        return 0
    what = f"top {args.top_k}" if args.top_k else "every label"
    what += f" with score >= {args.threshold:g}" if args.threshold is not None else ""
    print(f"{method}: {weights['kind']} weights ({weights['checkpoint']}); {what}")
    for i, record in enumerate(prediction_records(predictions, maps)):
        print(record["image"])
        for entry in record["labels"]:
            print(f"  {entry['score']:.3f}  {entry['label']}" + (f"  ({entry['heatmap']})" if maps else ""))
        if not record["labels"]:
            print(f"  (no label with a score >= {args.threshold:g})")
    if maps is not None:
        print(f"heat maps: {heatmaps}")
    return 0


def _method(params: RunParams, method: str | None, checkpoint: str | None) -> str:
    """The method to predict with: ``--method``, else the released one or the one a checkpoint is for, else the
    run's only finished method.  For a trained run, a run that has not finished says so before any data is read."""
    if method is not None and method not in params.methods:
        raise KeyError(no_such_method(params, method))
    released = params.released is not None and method in (None, params.released.method)
    if method is None:
        if released or checkpoint is not None:
            if params.released is None and len(params.methods) != 1:
                raise ValueError(f"{params.source} has several methods ({', '.join(params.methods)}): name the one "
                                 f"the checkpoint is for with --method")
            return method_name(params)
        finished = finished_methods(params, baselines=False)
        if len(finished) != 1:
            raise ValueError(f"{params.source}: name a method with --method ("
                             + (f"finished runs in {params.run_dir}: {', '.join(finished)})" if finished else
                                f"no finished run in {params.run_dir} yet; methods: {', '.join(params.methods)})"))
        return finished[0]
    if checkpoint is None and not released:
        _check_trained(params, method)
    return method


def _device(name: str) -> str:
    """The device to predict on; one torch cannot use is a ValueError naming it."""
    try:
        return str(pick_device(name))
    except RuntimeError as e:
        raise ValueError(str(e)) from None


def _check_trained(params: RunParams, method: str) -> None:
    """Refuse a run that has not finished training (new, interrupted or failed), naming its folder."""
    stage_dir = params.run_dir / method
    state = stage.status(stage_dir)
    if state == "finished":
        return
    if state == "failed":
        failed = stage.failure(stage_dir) or {}
        raise stage.StageNotFinishedError(
            f"{stage_dir}: this run failed ({failed.get('what', failed.get('reason'))}, see "
            f"{stage_dir / stage.FAILED}); it has no model to predict with")
    if state == "started":
        raise stage.StageNotFinishedError(
            f"{stage_dir}: this run has not finished training (it was interrupted); rerun `mlc train "
            f"{params.source} --method {method}` (with the same --set / --output-root) to resume it, or give "
            f"weights with --checkpoint PATH")
    raise FileNotFoundError(f"{stage_dir}: {method!r} has not been trained; train it first (`mlc train "
                            f"{params.source} --method {method}`, with the same --set / --output-root), or give "
                            f"weights with --checkpoint PATH")


if __name__ == "__main__":
    sys.exit(main())
