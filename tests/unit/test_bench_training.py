"""`bench training`: one row per CPU execution choice, ratios against fp32/contiguous at the most threads."""

from __future__ import annotations

import pandas as pd
import pytest

from diracbench.bench.__main__ import main as bench_main
from diracbench.errors import UserError

TINY = {"network": {"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.0}, "image_size": 16, "kernel_size": 9, "batch_size": 2, "steps": 1, "warmup": 1, "threads": [1, 2], "compile": False}


def test_table_rows_and_ratios(tmp_path):
    import json

    out = tmp_path / "training.csv"
    bench_main(["training", "--settings", json.dumps(TINY), "--out", str(out), "--device", "cpu", "--threads", "2"])
    df = pd.read_csv(out)
    combos = set(zip(df.precision, df.channels_last, df.threads))
    assert combos == {("fp32", False, 2), ("fp32", True, 2), ("bf16", False, 2), ("bf16", True, 2), ("fp32", False, 1), ("bf16", False, 1)}
    ref = df[(df.precision == "fp32") & ~df.channels_last & (df.threads == 2)].iloc[0]
    assert ref.speedup == 1.0
    assert (df.speedup - ref.s_per_step / df.s_per_step).abs().max() < 1e-12 and (df.s_per_step > 0).all()
    with pytest.raises(UserError, match="lacks"):
        bench_main(["training", "--settings", json.dumps({k: v for k, v in TINY.items() if k != "warmup"}), "--out", str(out), "--device", "cpu"])
