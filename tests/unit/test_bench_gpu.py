"""The GPU check: its tiny CPU smoke path runs end to end and never passes CPU numbers off as GPU ones."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from diracbench.bench.__main__ import main as bench_main
from diracbench.bench.gpu import PAPER_BASE
from diracbench.nn.unet import UNet, UNetConfig, count_parameters


def test_tiny_cpu_smoke_path_measures_every_combination(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the check would measure it instead of the CPU smoke path")
    out = tmp_path / "gpu.csv"
    bench_main(["gpu", "--allow-cpu", "--tiny", "--steps", "1", "--warmup", "0", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "CPU SMOKE TEST" in printed and "NOT GPU NUMBERS" in printed
    table = pd.read_csv(out)
    combos = set(zip(table["mode"], table["precision"], table["channels_last"]))
    assert combos == {(m, p, c) for m in ("train", "sample") for p in ("fp32", "bf16") for c in (False, True)}
    assert (table["images_per_s"] > 0).all() and table["device"].str.contains("NOT GPU NUMBERS").all()


@pytest.mark.parametrize("args", [["gpu"], ["gpu", "--allow-cpu"], ["gpu", "--tiny"]], ids=["plain", "allow-cpu-alone", "tiny-alone"])
def test_without_cuda_the_check_refuses(args, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(SystemExit) as exc:
        bench_main(args)
    assert exc.value.code == 1
    assert "GPU" in capsys.readouterr().out


def test_the_check_measures_the_paper_size_network():
    with torch.device("meta"):
        net = UNet(UNetConfig.from_dict(PAPER_BASE), 256, "fourier")
    assert count_parameters(net) == 67_745_027
