
import pytest
from conftest import ROOT

from mlc.config.params import ParamsError, load_params


def _write(tmp_path, text, name="p.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_params_file_loads():
    files = sorted((ROOT / "params").rglob("*.yaml"))
    assert len(files) >= 7
    for f in files:
        p = load_params(f)
        assert p.name and p.methods, f


def test_misspelt_key_is_named_with_file_and_line(tmp_path):
    p = _write(tmp_path, f"extends: {ROOT / 'params/toy_ci.yaml'}\nmethods:\n  q2l:\n    train:\n      epochz: 3\n")
    with pytest.raises(ParamsError) as e:
        load_params(p)
    msg = str(e.value)
    assert f"{p}:5" in msg and "methods.q2l.train.epochz" in msg and "did you mean 'epochs'" in msg


def test_type_errors_missing_keys_and_choices(tmp_path):
    with pytest.raises(ParamsError, match=r"p.yaml:1: seed: expected an integer, got 'zero'"):
        load_params(_write(tmp_path, "seed: zero\nname: x\n"))
    with pytest.raises(ParamsError, match=r"name: required key is missing"):
        load_params(_write(tmp_path, "seed: 1\n"))
    with pytest.raises(ParamsError,
                       match=r"methods.q2l.train.scheduler: 'onecycel' is not one of .*did you mean 'onecycle'"):
        load_params(_write(tmp_path, "name: x\nmethods:\n  q2l:\n    model: {name: q2l}\n"
                                     "    train: {scheduler: onecycel}\n"))
    with pytest.raises(ParamsError, match=r"methods.q2l.model.name: unknown model 'q2k'"):
        load_params(_write(tmp_path, "name: x\nmethods:\n  q2l:\n    model: {name: q2k}\n"))
    with pytest.raises(ParamsError, match=r"methods.q2l.model.hiden_dim: unknown key .*did you mean 'hidden_dim'"):
        load_params(_write(tmp_path, "name: x\nmethods:\n  q2l:\n    model: {name: q2l, hiden_dim: 3}\n"))
    with pytest.raises(ParamsError, match=r"p.yaml:2: not valid YAML"):
        load_params(_write(tmp_path, "name: x\n  bad: [\n"))
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_extends_merges_and_overrides(tmp_path):
    p = load_params(_write(tmp_path, f"extends: {ROOT / 'params/toy.yaml'}\nname: other\n"
                                     "methods:\n  q2l:\n    train: {epochs: 1}\n"))
    base = load_params(ROOT / "params/toy.yaml")
    assert p.name == "other" and p.methods["q2l"].train.epochs == 1
    assert p.methods["q2l"].train.lr == base.methods["q2l"].train.lr
    assert p.methods["q2l"].model == base.methods["q2l"].model


def test_a_file_that_names_another_data_source_does_not_inherit_the_converter_options(tmp_path):
    """COCO's keep_empty must not reach the NUS-WIDE converter of a file that extends the COCO recipe."""
    (tmp_path / "base.yaml").write_text("name: b\ndata: {dataset: manifest, manifest: m, source: coco, "
                                        "source_options: {keep_empty: true}}\n")
    (tmp_path / "same.yaml").write_text("extends: base.yaml\nname: s\ndata: {manifest: m2}\n")
    (tmp_path / "other.yaml").write_text("extends: base.yaml\nname: o\n"
                                         "data: {source: voc, source_options: {year: 2012}}\n")
    assert load_params(tmp_path / "same.yaml").data.source_options == {"keep_empty": True}
    assert load_params(tmp_path / "other.yaml").data.source_options == {"year": 2012}
    assert load_params(ROOT / "params/q2l/nuswide_r101_448.yaml").data.source_options == {}


def test_relative_file_paths_of_a_model_resolve_against_the_checkout_not_the_current_folder(tmp_path, monkeypatch):
    """SGRE's released label embeddings and MKT stage 2's stage-1 file are relative paths: they name files of
    the checkout that holds the params, wherever the command runs; keywords stay keywords."""
    from mlc.runs.resolve import method_params
    monkeypatch.chdir(tmp_path)
    sgre = load_params(ROOT / "params" / "released" / "sgre_coco_r101_448.yaml")
    assert method_params(sgre, "sgre").model.label_embeddings == \
        str(ROOT / "outputs" / "datasets" / "coco2014" / "embeddings" / "bert.npy")
    mkt = load_params(ROOT / "params" / "released" / "mkt_nuswide_stage2.yaml")
    assert method_params(mkt, "mkt_prompt").model.image_checkpoint == str(ROOT / "released" / "mkt" / "stage1.pth")
    toy = load_params(ROOT / "params" / "toy.yaml")
    assert method_params(toy, "salgl").model.label_embeddings == "words"
    assert method_params(toy, "mkt_prompt").model.image_checkpoint == \
        str(toy.run_dir / "mkt" / "checkpoints" / "best.pt")
    released_salgl = load_params(ROOT / "params" / "released" / "salgl_coco_r101_448.yaml")
    assert method_params(released_salgl, "salgl").model.label_embeddings == "checkpoint"


def test_label_name_embeddings_are_cached_under_the_output_root_not_the_current_folder(tmp_path, monkeypatch):
    """MKT and QKS embed label names through a cache: the run's ``<output_root>/embeddings`` (where notebook
    03 caches too), never ``./outputs`` of whatever folder the command runs in."""
    import dataclasses

    from mlc.core.registry import create_model
    from mlc.runs.resolve import method_params
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    params = load_params(ROOT / "params" / "toy_ci.yaml", output_root=str(tmp_path / "out"))
    names = ["red circle", "blue star", "green cross"]
    for method in ("mkt", "qks"):
        cfg = method_params(params, method).model
        assert cfg.embedding_cache == str(tmp_path / "out" / "embeddings")
        create_model(method, dataclasses.replace(cfg, clip_pretrained=None), 3, label_names=names)
    assert len(list((tmp_path / "out" / "embeddings").glob("*.npy"))) == 2
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_zsl_top_k_and_text_encoders_are_checked_when_loading(tmp_path):
    """``eval.zsl_top_k: [0]`` was accepted (and wrote P@0 = R@0 = 0) while ``top_k: 0`` was refused."""
    with pytest.raises(ParamsError, match=r"eval.zsl_top_k: must be a non-empty list of integers >= 1, got \[0\]"):
        load_params(_write(tmp_path, "name: x\neval: {zsl_top_k: [0]}\n"))
    with pytest.raises(ParamsError, match=r"text.encoders\[1\]: unknown encoder 'clip_qkz'.*did you mean 'clip_qks'"):
        load_params(_write(tmp_path, "name: x\ntext: {encoders: [words, clip_qkz]}\n"))


def test_yaml_aliases_that_expand_without_bound_are_refused_at_once(tmp_path):
    """Nested aliases (each level x10) made a 498-byte file take 37 s and 3.5 GB; one more level exhausted the
    machine.  The expansion is measured on the document's graph, before anything walks it."""
    import time
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    start = time.perf_counter()
    with pytest.raises(ParamsError, match=r"p.yaml: its aliases \(\*name\) expand it to more than 100,000 values"):
        load_params(_write(tmp_path, "name: x\n" + "\n".join(levels) + "\n"))
    assert time.perf_counter() - start < 5
    with pytest.raises(ParamsError, match=r"p.yaml:2: an alias refers to the value that contains it"):
        load_params(_write(tmp_path, "name: x\nloop: &me {again: *me}\n"))


@pytest.mark.parametrize("body, error", [
    ("seed: -1", r"p.yaml:\d+: seed: must be >= 0, got -1"),
    ("data: {toy: {n_train: -5}}", r"data.toy.n_train: must be >= 1, got -5"),
    ("data: {toy: {image_size: 0}}", r"data.toy.image_size: must be >= 8, got 0"),
    ("data: {toy: {unseen_fraction: 2}}", r"data.toy.unseen_fraction: must be in \[0, 1\), got 2"),
    ("data: {toy: {supersample: 0}}", r"data.toy.supersample: must be >= 1, got 0"),
    ("methods: {q2l: {train: {freeze: ['(']}}}", r"methods.q2l.train.freeze: must be valid regular expressions"),
    ("methods: {q2l: {train: {param_groups: [{match: '[', lr_scale: 0.1}]}}}",
     r"methods.q2l.train.param_groups\[0\].match: must be valid regular expressions"),
    ("methods: {q2l: {train: {device: gpu}}}", r"methods.q2l.train.device: must be auto, cpu, cuda, cuda:N or mps"),
    ("name: " + "x" * 300, r"name: .* must be at most 200 bytes long \(it is 300"),
    ("? [a, b]\n: 1", r"p.yaml:\d+: a key must be a plain name, not a list"),
])
def test_values_that_would_fail_after_the_run_folder_is_written_are_refused_when_loading(tmp_path, body, error):
    """These passed loading and failed later (after outputs/<run>/ was written), with raw library errors."""
    with pytest.raises(ParamsError, match=error):
        load_params(_write(tmp_path, f"extends: {ROOT / 'params/toy_ci.yaml'}\n{body}\n"))


def test_environment_references_take_the_key_s_type_and_work_in_extends(tmp_path, monkeypatch):
    """``seed: ${env:SEED}`` with SEED=3 was the string '3' ("expected an integer"); ``extends: ${env:X}`` was
    read as a file named '${env:X}'."""
    monkeypatch.setenv("MLC_TEST_SEED", "3")
    monkeypatch.setenv("MLC_TEST_BASE", str(ROOT / "params" / "toy_ci.yaml"))
    params = load_params(_write(tmp_path, "extends: ${env:MLC_TEST_BASE}\nseed: ${env:MLC_TEST_SEED}\n"
                                          "description: run ${env:MLC_TEST_SEED}\n"))
    assert params.seed == 3 and params.name == "toy_ci" and params.description == "run 3"


def test_a_params_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    p = tmp_path / "latin.yaml"
    p.write_bytes(f"extends: {ROOT / 'params/toy_ci.yaml'}\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ParamsError, match=r"latin.yaml:2: not UTF-8 text \(byte 0xe9\)"):
        load_params(p)


def test_params_that_ask_for_wandb_load_where_wandb_is_not_installed(tmp_path, monkeypatch):
    """Refusing ``log.wandb: true`` when the params load blocked ``mlc evaluate``, ``mlc config`` and
    ``load_model`` of such a file; training refuses it instead (tests/test_reliability.py), before writing."""
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    params = load_params(ROOT / "params" / "toy_ci.yaml", output_root=str(tmp_path), set_args=["log.wandb=true"])
    assert params.log.wandb is True
    assert list(tmp_path.iterdir()) == []


def test_a_whole_value_environment_reference_takes_the_type_of_its_key(tmp_path, monkeypatch):
    """``name: ${env:RUN}`` with RUN=2024 failed ("expected a string, got 2024"): YAML read the text as a number
    whatever the key.  Only number and boolean keys (and free-form ones) read it as YAML now."""
    for name, value in {"MLC_T_RUN": "2024", "MLC_T_INT": "7", "MLC_T_LR": "1e-3", "MLC_T_BOOL": "false",
                        "MLC_T_TEXT": "true"}.items():
        monkeypatch.setenv(name, value)
    params = load_params(_write(tmp_path, f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: ${{env:MLC_T_RUN}}\n"
                                          "description: ${env:MLC_T_TEXT}\n"
                                          "data: {num_workers: '${env:MLC_T_INT}', check_images: '${env:MLC_T_BOOL}',"
                                          " raw_root: '${env:MLC_T_NO:-}', source_options: {n: '${env:MLC_T_INT}'}}\n"
                                          "eval: {zsl_top_k: ['${env:MLC_T_INT}']}\n"
                                          "methods: {q2l: {train: {lr: '${env:MLC_T_LR}'}}}\n"))
    assert params.name == "2024" and params.description == "true"                 # str keys keep the text
    assert params.data.num_workers == 7 and params.data.check_images is False     # int, bool keys
    assert params.methods["q2l"].train.lr == 1e-3 and params.eval.zsl_top_k == [7]
    assert params.data.raw_root is None                                          # optional key, empty text
    assert params.data.source_options == {"n": 7}                                # free-form: as YAML reads it
    assert params.run_dir.name == "2024"
    monkeypatch.setenv("MLC_T_INT", "seven")
    with pytest.raises(ParamsError, match=r"p.yaml:4: data.num_workers: expected an integer, got 'seven' "
                                          r"\(from \$\{env:MLC_T_INT\}\)"):
        load_params(tmp_path / "p.yaml")


def test_extends_from_an_environment_reference_stays_a_path(tmp_path, monkeypatch):
    """``extends: ${env:BASE}`` with BASE=2024 (a file name YAML reads as a number) crashed with a TypeError; it
    is a file name whatever its text."""
    (tmp_path / "2024").write_text(f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: from_2024\n")
    monkeypatch.setenv("MLC_T_BASE", "2024")
    assert load_params(_write(tmp_path, "extends: ${env:MLC_T_BASE}\n")).name == "from_2024"
    monkeypatch.setenv("MLC_T_BASE", "2025")
    with pytest.raises(ParamsError, match=r"p.yaml:1: extends .*2025, which is not found"):
        load_params(tmp_path / "p.yaml")


def test_provenance_names_the_file_and_line_the_parent_the_command_line_and_the_environment(tmp_path, monkeypatch):
    """What ``mlc config`` prints beside each value."""
    from mlc.config.params import load_params_with_provenance
    monkeypatch.setenv("MLC_T_SEED", "4")
    monkeypatch.delenv("MLC_OUTPUT_ROOT", raising=False)
    p = _write(tmp_path, f"extends: {ROOT / 'params/toy_ci.yaml'}\nname: mine\nseed: ${{env:MLC_T_SEED}}\n"
                         "text: {encoders: [words, '${env:MLC_T_NONE:-bert}']}\n")
    params, prov = load_params_with_provenance(p, set_args=["data.toy={n_train: 10}", "methods.q2l.train.lr=2e-4"])
    assert params.seed == 4 and params.data.toy.n_train == 10 and params.text.encoders == ["words", "bert"]
    assert prov.files == [str(p), str(ROOT / "params/toy_ci.yaml"), str(ROOT / "params/toy.yaml")]
    assert prov.of("name") == f"{p}:2"
    assert prov.of("seed") == f"{p}:3, $MLC_T_SEED"
    assert prov.of("text.encoders") == f"{p}:4, ${{env:MLC_T_NONE:-bert}} (MLC_T_NONE unset)"
    assert prov.of("data.toy.n_train") == "command line (--set data.toy={n_train: 10})"
    assert prov.of("data.toy.n_val") == f"{ROOT / 'params/toy_ci.yaml'}:5"                # the parent's line
    assert prov.of("methods.q2l.train.lr") == "command line (--set methods.q2l.train.lr=2e-4)"
    assert prov.of("methods.q2l.model.name").startswith(f"{ROOT / 'params/toy.yaml'}:")  # the grandparent's
    assert prov.of("eval.threshold") == "default" and prov.of("output_root") == "default"
    assert load_params_with_provenance(p, output_root=str(tmp_path))[1].of("output_root") == \
        "command line (--output-root)"
    monkeypatch.setenv("MLC_OUTPUT_ROOT", str(tmp_path))
    assert load_params_with_provenance(p)[1].of("output_root") == "$MLC_OUTPUT_ROOT"
