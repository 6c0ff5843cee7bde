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
    bench_main(["gpu", "--allow-cpu", "--tiny", "--steps", "1", "--warmup", "0", "--skip-training", "--skip-sampling", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "CPU SMOKE TEST" in printed and "NOT GPU NUMBERS" in printed
    table = pd.read_csv(out)
    combos = set(zip(table["mode"], table["precision"], table["channels_last"]))
    assert combos == {(m, p, c) for m in ("train", "sample") for p in ("fp32", "bf16") for c in (False, True)}
    assert (table["images_per_s"] > 0).all() and table["device"].str.contains("NOT GPU NUMBERS").all()


def test_tiny_cpu_smoke_path_of_the_training_table(tmp_path, capsys):
    """Micro-batches x checkpointing on one device, then DDP through a real torchrun (two gloo ranks)."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the check would measure it instead of the CPU smoke path")
    out = tmp_path / "gpu.csv"
    bench_main(["gpu", "--allow-cpu", "--tiny", "--warmup", "0", "--training-steps", "1", "--skip-throughput", "--skip-sampling", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "NOT GPU NUMBERS" in printed and "activations saved for backward" in printed
    assert not out.exists()  # the throughput table was skipped
    table = pd.read_csv(tmp_path / "gpu_training.csv")
    assert (table["status"] == "ok").all(), table["status"].tolist()
    single = table[table["ranks"] == 1]
    assert sorted(zip(single["micro_batch"], single["checkpointing"].str.startswith("on"))) == [(2, False), (2, True), (4, False), (4, True)]
    ddp = table[table["ranks"] == 2]
    assert len(ddp) == 1 and ddp["images_per_s"].iloc[0] > 0  # torchrun ran both ranks to the end
    assert (table["estimate_forward_gflop_per_image"] > 0).all() and (table["estimate_saved_gib_per_image"] > 0).all()
    assert table["device"].str.contains("NOT GPU NUMBERS").all()


def test_tiny_cpu_smoke_path_of_the_sampling_table(tmp_path, capsys):
    """DPS, DDRM, Dirac guided sampling and LPIPS through the real method code on the tiny config's
    networks, at the planner's batch sizes (capped at 2), beside the planner's estimates."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the check would measure it instead of the CPU smoke path")
    from diracbench.bench.gpu_sampling import TINY_CONFIG, load_config, points
    from diracbench.plan import plan

    out = tmp_path / "gpu.csv"
    bench_main(["gpu", "--allow-cpu", "--tiny", "--skip-throughput", "--skip-training", "--sampling-steps", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "estimated total" in printed and "NOT GPU NUMBERS" in printed
    table = pd.read_csv(tmp_path / "gpu_sampling.csv")
    assert (table["status"] == "ok").all(), table["status"].tolist()
    assert table["job"].tolist() == ["sample_dps[photos/deblur]", "sample_ddrm[photos/deblur]", "sample_dirac-po[photos/deblur]", "sample_dirac-po[photos/inpaint]", "metrics[photos/deblur/dps]"]
    # The batch is the planner's pick (capped at 2 for the smoke test) and the NFE per image the job's.
    config = load_config(TINY_CONFIG)
    jobs = {j.name: j for j in plan(config, strict=False)}
    for _, r in table.iterrows():
        job = jobs[r["job"]]
        assert r["batch"] == min(2, job.micro_batch or job.batch_size) and r["nfe_per_image"] == pytest.approx(job.nfe_per_image)
        assert r["planned_s_per_image"] == pytest.approx(job.hours * 3600 / job.images)
    sampled = table[table["job"].str.startswith("sample_")]
    assert (sampled["timed_nfe"] == 2).all() and (sampled["measured_s_per_image"] > 0).all()
    assert "guidance error" in table.loc[3, "what"]  # the tiny config's inpainting PO is guided
    assert table["device"].str.contains("NOT GPU NUMBERS").all()
    assert len(points(config, list(jobs.values()), tiny=True)) == len(table)


def test_checkpointing_changes_memory_not_gradients():
    """The bench's checkpointed step computes the same gradients as the plain one."""
    from diracbench.bench.gpu import TINY
    from diracbench.bench.gpu_training import enable_checkpointing
    from diracbench.nn.models import build_model

    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model("dirac", {**TINY, "dropout": 0.1}, 16).train()
        if ckpt:
            assert enable_checkpointing(model).startswith("on")
        torch.manual_seed(1)  # same dropout masks: checkpointing replays the RNG
        model(torch.rand(2, 3, 16, 16), torch.tensor([0.02, 0.04])).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


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
