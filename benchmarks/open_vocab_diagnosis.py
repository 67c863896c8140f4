"""Why MKT and QKS score below CLIP zero-shot on the toy world's unseen labels: measured, piece by piece.

    python benchmarks/open_vocab_diagnosis.py [--params params/toy.yaml]

On the run's test split and unseen labels (ZSL mAP, faithful protocol), with the run's toy CLIP:

* CLIP zero-shot: cosine of the normalised image and prompt embeddings (the baseline of notebooks 13 / 20);
* MKT's scoring on CLIP's own weights, before any MKT training: the two streams together, each alone, and the
  local stream's top-k at several k (the toy grid has 64 patches; the paper's k = 16 is of 196);
* the trained MKT stage 1 (the run's best checkpoint), with the same variants;
* the trained QKS, and QKS's features scored after L2 normalisation (as CLIP scores).

Needs a finished toy run (``./run_all.sh``, or notebooks 02, 13 and 14). Prints a table and writes it as JSON
to benchmarks/results_open_vocab_diagnosis.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


@torch.no_grad()
def _features(model, loader):
    patches, glob, targets = [], [], []
    for batch in loader:
        p, g = model.encode_image(batch["image"])
        patches.append(p)
        glob.append(g)
        targets.append(batch["target"])
    return torch.cat(patches), torch.cat(glob), torch.cat(targets).numpy()


def _mkt_scores(patches, glob, emb, topk, streams="both"):
    sim = patches @ emb.T                                             # [B, N, C]
    local = sim.topk(min(topk, sim.shape[1]), dim=1).values.mean(1)
    g = glob @ emb.T
    local, g = local / local.norm(dim=-1, keepdim=True), g / g.norm(dim=-1, keepdim=True)
    return {"both": (local + g) / 2, "global": g, "local": local}[streams].numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params" / "toy.yaml"))
    args = ap.parse_args(argv)
    from mlc.config.params import load_params
    from mlc.engine.loop import make_loader
    from mlc.evaluation.open_vocab import all_labels_dataset, label_order
    from mlc.metrics.zsl import subset_report
    from mlc.modeling import clip
    from mlc.runs import toy_clip
    from mlc.runs.build import load_trained
    from mlc.runs.data import prepare_data
    from mlc.runs.resolve import method_params
    params = load_params(args.params)
    manifest = prepare_data(params, progress=False)
    order, n_seen = label_order(manifest)
    unseen_names = [manifest.label_names[i] for i in order[n_seen:]]
    mkt_name = next(m for m, mp in params.methods.items() if mp.model_name == "mkt" and mp.model.stage == "image")
    loader = make_loader(all_labels_dataset(params, mkt_name, manifest), 200, shuffle=False)
    rows = []

    def zsl(name, scores, targets):
        r = subset_report(scores, targets[:, n_seen:], params.eval.zsl_top_k, "zero")
        rows.append({"scorer": name, "ZSL mAP": round(100 * r["mAP"], 1)})
        print(rows[-1], flush=True)

    # CLIP zero-shot, as the baseline reports it
    path = params.clip.pretrained or str(toy_clip.clip_checkpoint(params))
    cmodel, preprocess, tokenizer = clip.load_clip(params.clip.model, path)
    images = toy_clip.encode_images(cmodel, preprocess, manifest, "test", progress=False)
    texts = clip.encode_prompts(cmodel, tokenizer, unseen_names, [params.clip.zero_shot_template])
    targets_all = manifest.dense_targets("test", order)
    zsl(f"CLIP zero-shot (cosine, prompt {params.clip.zero_shot_template!r})", images @ texts.T, targets_all)
    from mlc.methods.mkt.prompts import MKT_TEMPLATE
    from mlc.methods.qks.prompts import qks_templates
    for name, templates in ((f"MKT's template {MKT_TEMPLATE!r}", [MKT_TEMPLATE]),
                            ("QKS's 85 templates (averaged)", qks_templates())):
        other = clip.encode_prompts(cmodel, tokenizer, unseen_names, templates)
        zsl(f"CLIP zero-shot (cosine), {name}", images @ other.T, targets_all)

    # MKT's scoring on CLIP's weights (no MKT training), then on the trained stage 1
    from mlc.core.registry import create_model
    mp = method_params(params, mkt_name)
    for label, model in (("MKT scoring, CLIP weights (untrained)",
                          create_model("mkt", mp.model, n_seen, label_names=unseen_names)),
                         ("MKT stage 1, trained", load_trained(params, mkt_name))):
        model.eval()
        model.set_label_names(unseen_names)
        patches, glob, targets = _features(model, loader)
        emb = model.label_embeddings
        for streams in ("both", "global", "local"):
            zsl(f"{label}: {streams} stream{'s' if streams == 'both' else ''}, top-{mp.model.topk}",
                _mkt_scores(patches, glob, emb, mp.model.topk, streams), targets)
        for k in (1, 4, 64):
            zsl(f"{label}: both streams, top-{k}", _mkt_scores(patches, glob, emb, k), targets)
        cos = (torch.nn.functional.normalize(glob, dim=-1) @ torch.nn.functional.normalize(emb, dim=-1).T).numpy()
        zsl(f"{label}: cosine of the global feature (CLIP's scoring)", cos, targets)
        toy = params.clip.zero_shot_template                 # the wording the toy CLIP was trained on
        with torch.no_grad():
            emb_toy = torch.from_numpy(clip.encode_prompts(cmodel, tokenizer, unseen_names, [toy], False, False))
        for streams in ("both", "global"):
            zsl(f"{label}: {streams} stream{'s' if streams == 'both' else ''}, top-{mp.model.topk}, "
                f"template {toy!r}", _mkt_scores(patches, glob, emb_toy, mp.model.topk, streams), targets)

    qks_name = next((m for m, mp in params.methods.items() if mp.model_name == "qks"), None)
    if qks_name:
        model = load_trained(params, qks_name).eval()
        model.set_label_names(unseen_names)
        qloader = make_loader(all_labels_dataset(params, qks_name, manifest), 200, shuffle=False)
        raw, normed, targets = [], [], []
        with torch.no_grad():
            for batch in qloader:
                out = model(batch["image"])
                raw.append(out["logits"])
                q = torch.nn.functional.normalize(out["query_features"], dim=-1)           # [B, Q, E]
                t = torch.nn.functional.normalize(model.label_embeddings.to(q), dim=-1)    # [C, E]
                normed.append((q @ t.T).max(1).values)
                targets.append(batch["target"])
        targets = torch.cat(targets).numpy()
        zsl("QKS trained (raw dot products, max over queries)", torch.cat(raw).numpy(), targets)
        zsl("QKS trained, cosine scoring of the same features", torch.cat(normed).numpy(), targets)
        toy = params.clip.zero_shot_template
        with torch.no_grad():
            model.set_label_embeddings(torch.from_numpy(
                clip.encode_prompts(cmodel, tokenizer, unseen_names, [toy], False, False)))
            raw = [model(batch["image"])["logits"] for batch in qloader]
        zsl(f"QKS trained, text features of the template {toy!r} only", torch.cat(raw).numpy(), targets)
    out = ROOT / "benchmarks" / "results_open_vocab_diagnosis.json"
    out.write_text(json.dumps({"params": args.params, "rows": rows}, indent=1) + "\n")
    import pandas as pd
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
