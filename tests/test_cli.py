"""The `catgan` command: an explicit command table, --help that never contradicts itself, old flags kept."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catgan.cli import COMMANDS, build_parser, main
from synth import write_cat_folders, write_face_folder


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_the_command_table_is_what_the_parser_offers(capsys):
    parser_help = build_parser().format_help()
    assert list(COMMANDS) == [
        "prepare",
        "train",
        "info",
        "generate",
        "interpolate",
        "export",
        "evaluate",
        "serve",
        "project",
        "train-encoder",
        "edit",
        "restore",
    ]
    assert all(name in parser_help for name in COMMANDS)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_no_empty_or_contradicting_defaults(command, capsys):
    text = help_of(command, capsys)
    assert "examples:" in text or command == "info"
    for bad in ("(default: None)", "(default: True)", "(default: False)"):
        assert bad not in text, f"catgan {command} --help prints {bad}"
    assert not re.search(r"--no-\w+.*\(default: True\)", text)


def test_defaults_worth_reading_are_still_shown(capsys):
    assert re.search(r"\(default:\s+0-63\)", help_of("generate", capsys))  # the help wraps at 80 columns
    assert "frames in the whole walk (default: 60)" in help_of("interpolate", capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--no-ema", "--out", "x.png"],
        ["generate", "--ema", "--out-dir", "d"],
        ["export", "--run", "r", "--out", "o.safetensors", "--no-ema"],
        [
            "evaluate",
            "--data",
            "d",
            "--no-ema",
            "--no-catface",
            "--no-memorisation",
            "--extractor",
            "selfsup",
        ],
        ["train", "d", "--run", "r", "--run-dir", "r2", "--no-flip", "--sync-bn", "--loss", "hinge"],
        ["serve", "--model", "cats-64", "--no-ema", "--port", "0"],
    ],
)
def test_every_existing_flag_still_parses(argv):
    args = build_parser().parse_args(argv)
    assert callable(args._run)


# ---- prepare: --holdout, --max-file-mb, the report, SIGTERM ---------------------------------------


def _prepare(src: Path, out: Path, *flags: str) -> list[str]:
    quiet = ["--sizes", "16", "--workers", "1", "--no-progress"]
    return ["prepare", str(src), "--out", str(out), *quiet, *flags]


def test_prepare_holdout_puts_a_share_aside_and_the_report_is_written(tmp_path, capsys):
    src = write_face_folder(tmp_path / "faces", n=40)
    out = tmp_path / "out"
    assert main(_prepare(src, out, "--holdout", "0.25")) == 0
    printed = capsys.readouterr().out
    train, held = sorted((out / "cats-16").glob("*.png")), sorted((out / "cats-16-holdout").glob("*.png"))
    assert len(train) + len(held) == 40 and 0 < len(held) < 20  # a hash-chosen share, not an exact quarter
    assert not {p.name for p in train} & {p.name for p in held}
    assert "held out" in printed and str(out / "report.txt") in printed
    assert (out / "report.txt").read_text().strip() == printed.strip()  # the report promised is on disk


@pytest.mark.parametrize("value", ["0", "0.6", "-0.1", "x"])
def test_prepare_holdout_out_of_range_is_refused(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as done:
        main(_prepare(tmp_path, tmp_path / "out", "--holdout", value))
    assert done.value.code == 2 and "--holdout" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_prepare_max_file_mb_skips_larger_files_before_reading(tmp_path, capsys):
    src = write_face_folder(tmp_path / "faces", n=4)
    big = src / "big.jpg"
    big.write_bytes((src / "face000.jpg").read_bytes() + b"\0" * (2 * 2**20))  # a 2 MiB JPEG that decodes
    assert main(_prepare(src, tmp_path / "out", "--max-file-mb", "1")) == 0
    dataset = json.loads((tmp_path / "out" / "cats-16" / "dataset.json").read_text())
    dropped = {Path(d["source"]).name: d["reason"] for d in dataset["dropped"]}
    assert list(dropped) == ["big.jpg"] and len(list((tmp_path / "out" / "cats-16").glob("*.png"))) == 4
    assert main(_prepare(src, tmp_path / "out2", "--max-file-mb", "3")) == 0  # under the limit: kept
    assert len(list((tmp_path / "out2" / "cats-16").glob("*.png"))) == 5
    with pytest.raises(SystemExit):
        main(_prepare(src, tmp_path / "out3", "--max-file-mb", "0"))
    capsys.readouterr()


def test_prepare_help_names_the_report_and_holdout(capsys):
    text = help_of("prepare", capsys)
    assert "report.txt" in text and "--holdout" in text and "--max-file-mb" in text


def test_prepare_ended_by_sigterm_exits_143(tmp_path):
    write_cat_folders(tmp_path / "src", {"CAT_00": 60}, size=(480, 360))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "catgan", *_prepare(tmp_path / "src", out)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # wait until it is writing images, then ask it to stop
            partial = list(out.glob(".cats-16.partial-*")) if out.exists() else []
            if partial and len(list(partial[0].iterdir())) >= 3:
                break
            assert proc.poll() is None, "prepare finished before it could be stopped; make it slower"
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (out / "cats-16").exists() and not list(out.glob(".cats-16.partial-*"))


# ---- serve --allow-host --------------------------------------------------------------------------


def test_serve_allow_host_answers_that_name_and_refuses_others(tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from test_web_api import export_tiny

    weights = export_tiny(tmp_path / "tiny.safetensors")
    cmd = ["serve", "--weights", str(weights), "--port", "0", "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "catgan", *cmd, "--allow-host", "cats.lan", "--allow-host", "pets.lan"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline()  # printed once the port is bound and listening
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
        status = {host: _status(port, host) for host in ("cats.lan", "pets.lan:8000", "evil.example")}
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status == {"cats.lan": 200, "pets.lan:8000": 200, "evil.example": 421}


def _status(port: int, host: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/info", headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


def test_serve_help_shows_the_allow_host_example(capsys):
    text = help_of("serve", capsys)
    assert "--allow-host cats.lan" in text and "421" in text
    assert build_parser().parse_args(["serve"]).allow_host == []
