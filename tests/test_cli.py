"""Every script's parser is generated from its config dataclass, and every earlier spelling still parses.

docs/architecture.md ("Flags"): a field is a flag (canonical kebab-case, snake_case accepted, older names as
aliases); bool fields are --x / --no-x; Literal fields are choices.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from arguments import parse_config
from arguments.flags import leaf_fields
from cli_helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["train", "render", "metrics", "segment", "eval_segmentation", "prune", "extract_features", "dino_train",
           "cluster", "affordance", "eval_affordance", "view", "scene.__main__"]


def parser_of(script: str):  # noqa: ANN201 - argparse parser
    mod = importlib.import_module(script) if "." in script else load_script(script)
    return mod.build_parser()


def test_every_script_is_listed() -> None:
    scripts = {p.stem for p in ROOT.glob("*.py") if p.stem not in ("setup",)}
    assert scripts == {s for s in SCRIPTS if "." not in s}


@pytest.mark.parametrize("script", SCRIPTS)
def test_parser_is_generated_from_the_config(script: str) -> None:
    """Each config field has its flag; the parser holds no flag that is not a field (--help/--debug aside)."""
    p = parser_of(script)
    names = [f.name for f, _ in leaf_fields(p.config_class)]
    actions = [a for a in p._actions if a.dest not in ("help", "debug")]
    assert sorted(a.dest for a in actions) == sorted(names)
    for a in actions:
        assert getattr(a, "config_field", "").endswith(f".{a.dest}"), f"{script}: {a.option_strings} hand-written"
        assert a.help and a.help.strip(), f"{script}: {a.option_strings} has no help"
        long = [o for o in a.option_strings if o.startswith("--")]
        assert long[0] == "--" + a.dest.replace("_", "-"), f"{script}: canonical spelling of {a.dest}"
        assert "--" + a.dest in a.option_strings, f"{script}: snake_case spelling of {a.dest}"


@pytest.mark.parametrize("script", ["segment", "prune", "train"])
def test_help_is_the_generated_parser(script: str, capsys) -> None:
    mod = load_script(script)
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out == mod.build_parser().format_help()


def cfg_of(script: str, argv: list[str]):  # noqa: ANN201 - the script's config
    return parse_config(parser_of(script), argv)[0]


def test_segment_flags_keep_their_meaning() -> None:
    old = cfg_of("segment", ["--model", "M", "--masks", "K", "--mask-format", "ids", "--labels", "3,7", "--views",
                             "0.1", "--prompt", "a:1,2", "--prompt", "b:3,4", "--negative", "a:5,6", "--prompt-box",
                             "a:1,2,3,4", "--proposals", "S", "--granularity", "part", "--no-complete", "--rounds", "2",
                             "--everything", "--min-gaussians", "7", "--pick", "a:1,1", "--allow-empty", "--force",
                             "--margin", "0.2", "--undecided", "drop", "--knn", "3", "--gif-frames", "0",
                             "--preview-size", "64", "--no-progress", "--num_threads", "2", "--backend", "cpu",
                             "--demo-objects", "all"])
    j = old.job
    assert (j.model_path, j.masks, j.mask_format, j.labels, j.views) == ("M", "K", "ids", "3,7", "0.1")
    assert j.prompt == ["a:1,2", "b:3,4"] and j.negative == ["a:5,6"] and j.prompt_box == ["a:1,2,3,4"]
    assert (j.proposals, j.granularity, j.complete, j.rounds, j.everything, j.min_gaussians) == \
        ("S", "part", False, 2, True, 7)
    assert (j.pick, j.allow_empty, j.force, j.margin, j.undecided, j.knn) == (["a:1,1"], True, True, 0.2, "drop", 3)
    assert (j.gif_frames, j.preview_size, j.progress, j.num_threads, j.backend) == (0, 64, False, 2, "cpu")
    assert old.demo_options.demo_objects == "all" and not old.demo_options.demo
    new = cfg_of("segment", ["-m", "M", "--model-path", "N", "--mask_format", "sam", "--complete", "--quiet",
                             "--threads", "1", "--demo"])
    assert (new.job.model_path, new.job.mask_format, new.job.complete, new.job.progress, new.job.num_threads) == \
        ("N", "sam", True, False, 1)
    assert new.demo_options.demo
    d = cfg_of("segment", [])
    assert d.job.complete is None and d.job.progress and d.job.margin is None and d.job.prompt == [] and not d.demo_options.demo


def test_inria_and_earlier_spellings_parse() -> None:
    t = cfg_of("train", ["-s", "S", "-m", "M", "-r", "2", "-w", "--eval", "--data_device", "cuda", "--threads", "3",
                         "--densify_until_iter", "5", "--compute_cov3D_python", "--quiet", "--test_iterations", "1",
                         "2", "--random_init", "images", "--detect_anomaly", "--start_checkpoint", "c.pth"])
    assert (t.model.source_path, t.model.model_path, t.model.resolution, t.model.white_background) == \
        ("S", "M", 2, True)
    assert t.model.eval and t.model.data_device == "cuda" and t.pipe.num_threads == 3 and t.opt.densify_until_iter == 5
    assert t.pipe.compute_cov3D_python and not t.progress and t.quiet and t.test_iterations == [1, 2]
    assert t.random_init == "images" and t.detect_anomaly and t.start_checkpoint == "c.pth"
    assert not cfg_of("train", ["--white_background", "--no-white_background"]).model.white_background
    r = cfg_of("render", ["-m", "M", "--skip_train", "--quiet", "--threads", "2", "--iteration", "7"])
    assert r.skip_train and not r.skip_test and not r.progress and r.pipe.num_threads == 2 and r.iteration == 7
    m = cfg_of("metrics", ["-m", "a", "b", "--no_lpips", "--split", "train"])
    assert m.model_paths == ["a", "b"] and not m.lpips and m.split == "train"
    p = cfg_of("prune", ["-m", "M", "--threads", "3", "--sweep_thresholds", "0,1e-3", "--quiet", "--sweep"])
    assert p.num_threads == 3 and p.sweep_thresholds == (0.0, 0.001) and not p.progress and p.sweep
    assert cfg_of("prune", ["-m", "M", "--num_threads", "4"]).num_threads == 4
    e = cfg_of("extract_features", ["-s", "S", "--hub-repo", "H", "--pca-samples", "10", "--no-progress",
                                    "--position", "--extractor", "dinov2", "--device", "cpu"])
    assert (e.source_path, e.extractor.hub_repo, e.extractor.pca_samples, e.progress, e.extractor.position) == \
        ("S", "H", 10, False, True)
    assert e.images == "images" and e.resolution == -1 and e.extractor.extractor == "dinov2"
    dt = cfg_of("dino_train", ["--model", "M", "--cosine-weight", "0.5", "--num_threads", "1", "--iterations", "9"])
    assert dt.field.cosine_weight == 0.5 and dt.field.num_threads == 1 and dt.field.iterations == 9
    c = cfg_of("cluster", ["-m", "M", "--k", "3", "--select-by-mask", "v", "m.png", "--select-by-mask", "w", "n.png",
                           "--no-cluster-plys", "--feature-weight", "2"])
    assert c.cluster.k == 3 and c.select_by_mask == [["v", "m.png"], ["w", "n.png"]] and not c.cluster_plys
    assert c.cluster.feature_weight == 2.0
    a = cfg_of("affordance", ["-m", "M", "--sources", "S", "--no-2d", "--knn-backend", "sklearn", "--max-samples",
                              "5", "--annotated-views", "transfer", "--no-progress", "--hub-repo", "H"])
    assert not a.save_2d and a.knn_backend == "sklearn" and a.max_samples == 5 and a.annotated_views == "transfer"
    assert not a.progress and a.hub_repo == "H"
    ea = cfg_of("eval_affordance", ["--gt", "G", "--include-annotated", "--no-progress", "--model", "M"])
    assert ea.include_annotated and not ea.progress and ea.model_path == "M"
    es = cfg_of("eval_segmentation", ["--model", "M", "--labels", "L", "--gt-masks", "G", "--gt-format", "ids",
                                      "--render", "object", "--gt-labels", "3"])
    assert (es.gt_format, es.render, es.gt_labels, es.split) == ("ids", "object", "3", "test")


def test_given_names_the_flags_set_on_the_command_line() -> None:
    cfg, given = parse_config(parser_of("render"), ["-m", "M", "-r", "-1", "--quiet"])
    assert given == {"model_path", "resolution", "progress"} and cfg.model.resolution == -1


@pytest.mark.parametrize("argv, needle", [
    (["--backend", "nope"], "invalid choice: 'nope'"),
    (["--mask-format", "png"], "invalid choice: 'png'"),
    (["--knn", "many"], "invalid int value"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_flags_are_one_line_exit_2(argv: list[str], needle: str, capsys) -> None:
    seg = load_script("segment")
    with pytest.raises(SystemExit) as e:
        seg.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and needle in err and err.startswith("error: "), err


def test_abbreviations_of_one_flag_are_not_ambiguous() -> None:
    """--num could be --num-threads or --num_threads: the same flag, so argparse's prefix match takes it."""
    assert cfg_of("prune", ["-m", "M", "--num", "2"]).num_threads == 2
    assert cfg_of("segment", ["--preview-s", "32"]).job.preview_size == 32
