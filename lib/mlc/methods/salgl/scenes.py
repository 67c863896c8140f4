"""SALGL's discovered scenes: what the model assigns, how that agrees with true scenes, what it counted."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mlc.core.io import atomic_write_json
from mlc.core.progress import bar as progress_bar
from mlc.engine.loop import make_loader, pick_device
from mlc.methods.salgl.model import comatrix_to_transition
from mlc.runs.build import load_trained
from mlc.runs.data import method_data


@torch.no_grad()
def predict_scene_probs(model, dataset, batch_size: int = 128, device: str = "cpu", progress: bool = True
                        ) -> np.ndarray:
    """Scene probabilities [N, S] of every image of a dataset (model in eval mode: nothing is counted)."""
    model = model.to(device).eval()
    out = []
    for batch in progress_bar(make_loader(dataset, batch_size, shuffle=False), desc="scenes", leave=False,
                      disable=not progress):
        out.append(model(batch["image"].to(device))["scene_probs"].float().cpu())
    return torch.cat(out).numpy()


def scene_agreement(true_scenes: np.ndarray, predicted: np.ndarray) -> dict:
    """Adjusted Rand index and normalised mutual information between two partitions of the images.

    Both are invariant to how the discovered scenes are numbered; 1 is a perfect match and ARI is
    about 0 for an assignment unrelated to the true scenes.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    true_scenes, predicted = np.asarray(true_scenes), np.asarray(predicted)
    return {"ARI": float(adjusted_rand_score(true_scenes, predicted)),
            "NMI": float(normalized_mutual_info_score(true_scenes, predicted)),
            "n_images": int(len(true_scenes)),
            "discovered_scenes_used": int(len(np.unique(predicted)))}


def contingency_table(true_scenes: np.ndarray, predicted: np.ndarray, true_names: list[str] | None = None,
                      num_scenes: int | None = None) -> pd.DataFrame:
    """Images per (true scene, discovered scene)."""
    num_scenes = num_scenes or int(predicted.max()) + 1
    table = pd.crosstab(pd.Series(true_scenes, name="true scene"), pd.Series(predicted, name="discovered scene"))
    table = table.reindex(columns=range(num_scenes), fill_value=0)
    if true_names is not None:
        table.index = [true_names[i] for i in table.index]
        table.index.name = "true scene"
    return table


def learned_transitions(model, normalize: bool | None = None, ignore_self: bool = False) -> np.ndarray:
    """P_s(b | a) [S, C, C] from the model's co-occurrence memory (as the model itself uses it)."""
    cfg = model.cfg
    return comatrix_to_transition(model.comatrix.detach().float().cpu(), ignore_self,
                                  cfg.normalize if normalize is None else normalize).numpy()


def evaluate_scenes(params, name: str, device: str = "auto", progress: bool = True) -> dict:
    """Discovered scenes of a finished SALGL run on the test split, against the true scenes when the
    manifest has them; written to ``outputs/<run>/<method>/metrics_scenes.json``."""
    data = method_data(params, name)
    dev = str(pick_device(device if device != "auto" else params.methods[name].train.device))
    model = load_trained(params, name, device=dev)
    probs = predict_scene_probs(model, data.datasets["test"], params.methods[name].train.eval_batch_size, dev,
                                progress)
    predicted = probs.argmax(1)
    usage = np.bincount(predicted, minlength=probs.shape[1])
    report = {"method": name, "num_scenes": int(probs.shape[1]), "test_scene_usage": usage.tolist(),
              "mean_max_probability": float(probs.max(1).mean())}
    test = data.manifest.split("test")
    result = {"model": model, "probs": probs, "predicted": predicted, "report": report, "table": None}
    if "scene" in test and test["scene"].notna().all():
        true = test["scene"].to_numpy().astype(int)
        report.update(scene_agreement(true, predicted))
        result["true"] = true
        result["table"] = contingency_table(true, predicted, data.manifest.meta.get("scenes"), probs.shape[1])
    atomic_write_json(params.run_dir / name / "metrics_scenes.json", report)
    return result
