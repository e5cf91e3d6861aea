"""A new user's first runs (issue 38): when cats appear, where the grids go, a finished run says so,
other data is caught, and the cadence counts steps (old runs keep theirs, issue 33)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from catgan import checkpoint as ckpt
from catgan.cli import main
from catgan.config import RunOptions, get_preset, presets
from catgan.errors import CatganError
from catgan.training.loop import train
from catgan.training.report import FIRST_FACES, first_faces
from catgan.training.state import resolve_configs

REPO = Path(__file__).resolve().parents[1]
V1 = Path(__file__).parent / "fixtures" / "v1"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from synth import make_prepared_dataset

    return make_prepared_dataset(tmp_path_factory.mktemp("data"), n=8, size=16)  # 2 steps of 4


def _train(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(data),
        "--preset",
        "tiny-16",
        "--run",
        str(run),
        "--batch",
        "4",
        "--threads",
        "1",
        *extra,
    ]


def test_a_finished_run_says_so_in_one_line_exits_0_and_touches_nothing(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train(data, run, "--max-steps", "3", "--no-progress")) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert main(_train(data, run, "--max-steps", "3")) == 0  # with the progress bar on
    out, err = capsys.readouterr()
    assert "this run finished at step 3; raise --max-steps or --epochs to go on" in out
    assert "step/s" not in err and "3/3" not in err and "it/s" not in err  # no bar drawn
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    assert main(_train(data, run, "--max-steps", "4", "--no-progress")) == 0  # raised: it goes on
    assert "resuming" in capsys.readouterr().out and ckpt.latest_checkpoint(run).name == "step-00000004.pt"


def test_other_data_is_caught_and_allow_new_data_goes_on_with_a_note(data, tmp_path, capsys):
    from synth import make_prepared_dataset

    other = make_prepared_dataset(tmp_path / "other", n=12, size=16, seed=1)
    run = tmp_path / "run"
    assert main(_train(data, run, "--max-steps", "2", "--no-progress")) == 0
    recorded = json.loads((run / "config.json").read_text())["dataset"]
    assert recorded["images"] == 8 and len(recorded["sha256"]) == 64
    capsys.readouterr()
    assert main(_train(other, run, "--max-steps", "4", "--no-progress")) == 2
    err = capsys.readouterr().err
    assert "the dataset changed" in err and "--allow-new-data" in err and err.count("\n") == 1
    assert ckpt.latest_checkpoint(run).name == "step-00000002.pt"  # nothing trained
    assert main(_train(other, run, "--max-steps", "4", "--no-progress", "--allow-new-data")) == 0
    out = capsys.readouterr().out
    assert "going on with the new data (--allow-new-data)" in out
    assert json.loads((run / "config.json").read_text())["dataset"]["images"] == 12  # it records the new


def test_train_prints_each_sample_grid_path_as_it_writes_it(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train(data, run, "--max-steps", "5", "--sample-every", "2", "--no-progress")) == 0
    out = capsys.readouterr().out
    for step in (0, 2, 4, 5):
        path = run / "samples" / f"step-{step:06d}.png"
        assert f"step {step}: samples {path}" in out and path.is_file()


def test_train_says_when_the_first_faces_appear_for_a_measured_preset(tmp_path, capsys):
    from synth import make_prepared_dataset

    data = make_prepared_dataset(tmp_path / "data", n=4, size=64)
    argv = ["train", str(data), "--preset", "cats-64", "--run", str(tmp_path / "run"), "--batch", "4"]
    assert main([*argv, "--max-steps", "1", "--threads", "1", "--no-progress", "--sample-every", "0"]) == 0
    out = capsys.readouterr().out
    assert "when cats appear, as measured for cats-64" in out and "plainly cats by 4,000" in out


def test_first_faces_names_measured_presets_only_and_not_past_the_step():
    assert set(FIRST_FACES) <= set(presets())
    for name, (step, seen) in FIRST_FACES.items():
        doc = seen.rsplit("(", 1)[-1].split(";")[-1].strip().split(",")[0]  # "docs/....md"
        assert (REPO / doc).is_file(), (name, doc)  # the measurement it cites exists
        line = first_faces(get_preset(name).model)
        assert line is not None and name in line
        if step is not None:
            assert first_faces(get_preset(name).model, step) is None  # a run past it needs no hint
    assert first_faces(get_preset("dcgan-64").model) == first_faces(get_preset("cats-64").model)
    assert first_faces(get_preset("tiny-16").model) is None  # nothing measured: nothing said


def test_checkpoint_every_counts_steps(data, tmp_path):
    run = tmp_path / "run"
    assert (
        main(_train(data, run, "--max-steps", "7", "--checkpoint-every", "3", "--keep", "5", "--no-progress"))
        == 0
    )
    assert [p.name for p in ckpt.list_checkpoints(run)] == [
        "step-00000003.pt", "step-00000006.pt", "step-00000007.pt"
    ]  # fmt: skip
    output = json.loads((run / "config.json").read_text())["output"]
    assert (output["checkpoint_every"], output["checkpoint_every_epochs"], output["keep_checkpoints"]) == (
        3,
        0,
        5,
    )
    assert "checkpoint_every" not in json.loads((run / "config.json").read_text())["train"]
    # a resume keeps the recorded cadence: the next checkpoint is at step 9, then the end
    assert main(_train(data, run, "--max-steps", "10", "--no-progress")) == 0
    assert [p.name for p in ckpt.list_checkpoints(run)][-2:] == ["step-00000009.pt", "step-00000010.pt"]


def _v1_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(V1 / "run", run)
    return run


def test_an_old_run_keeps_its_cadence_in_epochs_and_a_step_cadence_replaces_it(tmp_path):
    run = _v1_run(tmp_path)  # config.json "train": checkpoint_every 1 (epochs), sample_every 0, keep 10
    _, cfg, opts = resolve_configs(run, None, None, {"epochs": 3}, RunOptions(device="cpu", progress=False))
    assert (opts.checkpoint_every_epochs, opts.checkpoint_every, opts.sample_every) == (1, 0, 0)
    assert opts.keep_checkpoints == 10 and opts.device == "cpu"
    images = load_file(str(V1 / "data16.safetensors"))["images"]  # 12 images, batch 4: 3 steps per epoch
    train(images, ckpt.load_run_config(run)[0], cfg, run, opts, log=lambda _: None)
    assert [s for s, _ in ckpt.step_checkpoints(run)] == [3, 6, 9]  # at each epoch's end, as it always did
    assert ckpt.load_run_output(run)["checkpoint_every_epochs"] == 1  # recorded in the new form
    _, _, opts = resolve_configs(run, None, None, {"checkpoint_every": 2}, None)
    assert (opts.checkpoint_every, opts.checkpoint_every_epochs) == (2, 0)


def test_a_bad_recorded_cadence_is_one_clear_error(tmp_path):
    run = _v1_run(tmp_path)
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "output": {"sample_every": -1}}))
    with pytest.raises(CatganError, match=r"config.json: sample_every must be >= 0, got -1"):
        ckpt.load_run_output(run)
    (run / "config.json").write_text(json.dumps({**saved, "output": {"sample_evry": 5}}))
    with pytest.raises(CatganError, match=r"output has no field\(s\) \['sample_evry'\]"):
        ckpt.load_run_output(run)


# ---- passes that are not training say how far they are (issue 38, item 3) ------------------------------


class _Pixels:
    """4x4 area-pooled pixels as features: a stand-in feature space that costs nothing."""

    name = "pixels-4x4-test"
    resize = "area 4x4"

    def features(self, images):
        import torch.nn.functional as F

        return F.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1).double().numpy()  # (N, 48)


def test_evaluate_without_a_terminal_prints_a_line_per_stage(data, tmp_path, monkeypatch, capsys):
    from catgan.metrics import features

    monkeypatch.setitem(features.EXTRACTORS, "pixels", lambda device, options: _Pixels())
    argv = ["evaluate", "--weights", str(V1 / "dcgan16.safetensors"), "--data", str(data), "--n", "8"]
    argv += ["--extractor", "pixels", "--batch", "4", "--kid-subsets", "2", "--kid-subset-size", "4"]
    argv += ["--no-memorisation", "--cache-dir", str(tmp_path), "--device", "cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err  # stderr is no terminal here: lines, not a bar
    stages = ("drawing samples", f"reference features ({data.name})", "sample features")
    for stage in (*stages, "cat-face detector (samples)", "cat-face detector (real)"):
        assert f"{stage}: 8 images ..." in err and f"{stage}: 8/8 images, done in" in err, stage
    argv.append("--no-catface")
    assert main(argv) == 0  # the reference is cached now: no reference pass, the others as before
    err = capsys.readouterr().err
    assert "reference features" not in err and "sample features: 8/8 images, done in" in err


def test_export_says_how_far_averaging_and_standing_statistics_are(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train(data, run, "--max-steps", "6", "--checkpoint-every", "2", "--no-progress")) == 0
    out = tmp_path / "g.safetensors"
    argv = ["export", "--run", str(run), "--out", str(out), "--average-from", "2", "--standing-stats", "5"]
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert (
        "averaging checkpoints: 2 checkpoints ..." in err and "averaging checkpoints: 2/2 checkpoints" in err
    )
    assert "standing statistics: 5 batches ..." in err and "standing statistics: 5/5 batches, done in" in err
    provenance = ckpt.load_generator_file(out)[2]  # the data it was trained on, named, not its path
    assert provenance["dataset"]["path"] == data.name and provenance["dataset"]["images"] == 8
    assert "output" not in provenance


def test_progress_lines_give_the_time_left_at_each_quarter(capsys):
    from catgan.progress import progress_pass

    with progress_pass("a pass", 8, "items") as bar:
        for _ in range(8):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "a pass: 8 items ..." and lines[-1].startswith("a pass: 8/8 items, done in")
    assert [line.split(",")[0] for line in lines[1:-1]] == [
        "a pass: 2/8 items",
        "a pass: 4/8 items",
        "a pass: 6/8 items",
    ]
    assert all("s left" in line for line in lines[1:-1])
    with progress_pass("off", 8, "items", enabled=False) as bar:
        bar.update(8)
    assert capsys.readouterr().err == ""


# ---- naming: --ema/--no-ema everywhere, GIFs that can be scaled (issue 38, item 8) ----------------------


@pytest.mark.parametrize("flag, want", [([], True), (["--ema"], True), (["--no-ema"], False)])
def test_evaluate_takes_ema_and_no_ema_like_the_other_commands(flag, want):
    from catgan.cli import build_parser
    from catgan.cli.options import ema

    for command in (
        ["evaluate", "--data", "d"],
        ["generate", "--out", "x.png"],
        ["export", "--run", "r", "--out", "o.safetensors"],
    ):
        assert ema(build_parser().parse_args([*command, *flag])) is want, command


def test_interpolate_scales_its_gif_frames(tmp_path, capsys):
    from PIL import Image

    small, big = tmp_path / "walk.gif", tmp_path / "walk-4.gif"
    base = ["interpolate", "--weights", str(V1 / "dcgan16.safetensors"), "--seeds", "0,1", "--frames", "3"]
    assert main([*base, "--out", str(small), "--device", "cpu"]) == 0
    assert main([*base, "--out", str(big), "--scale", "4", "--device", "cpu"]) == 0
    with Image.open(small) as a, Image.open(big) as b:
        assert a.size == (16, 16) and b.size == (64, 64) and b.n_frames == a.n_frames == 3
        first_small, first_big = a.convert("RGB"), b.convert("RGB")
        assert first_big.resize((16, 16), Image.NEAREST).tobytes() == first_small.tobytes()
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "x.gif"), "--scale", "17"]) == 2
    assert "--scale must be a whole number from 1 to 16, got 17" in capsys.readouterr().err


def test_readme_lists_every_preset_and_names_the_data_folder_as_help_does(capsys):
    import re

    from catgan.cli import build_parser

    readme = (REPO / "README.md").read_text()
    table = re.findall(r"^\| `([a-z0-9-]+)` \|", readme[readme.index("## Presets") :], re.M)
    assert sorted(table) == sorted(presets())  # `catgan info --list`, every one
    helps = []
    for name in ("generate", "interpolate", "prepare", "train", "evaluate", "export"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        helps.append(capsys.readouterr().out)
    assert "data/cats" not in readme and not any("data/cats" in h for h in helps)
    assert "data/faces/cats-64" in readme
