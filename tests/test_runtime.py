"""Device choice: bad names and absent GPUs are one clear CatganError, never a torch traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from catgan.errors import CatganError
from catgan.runtime import cpu_count, resolve_device


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")  # a device is taken as it is
    assert cpu_count() >= 1
    with pytest.raises(CatganError, match="must be auto, cpu or cuda"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    "name, match",
    [
        ("cudax", "must be auto, cpu or cuda"),
        ("cuda:a", "must be auto, cpu or cuda"),
        ("cuda:1", "has 1 CUDA device"),
    ],
)
def test_bad_cuda_names_with_one_gpu(monkeypatch, name, match):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(CatganError, match=match):
        resolve_device(name)


def test_prepare_and_the_cli_parser_do_not_import_torch():
    code = (
        "import sys, catgan.data.prepare, catgan.cli; catgan.cli.build_parser(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
