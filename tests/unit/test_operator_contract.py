"""The operator contract, run on every kind in diracbench.operators.registry (a new kind is tested
without editing this file): adjoint, SVD, severity, normal equations, nesting, shapes, operator.json
round trip and the scico adapter. Each kind is built from its family's `example_config`."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
import torch
import yaml

from diracbench import configcheck
from diracbench.errors import UserError
from diracbench.operators import OPERATOR_KINDS, GeometricNoise, LinearSchedule, TableSchedule, family_from_config, family_from_spec, operator_spec
from diracbench.operators.base import ELEMENTWISE, SEPARABLE
from diracbench.operators.downsample import DownsampleFamily, project
from diracbench.schedule.__main__ import parameter_range
from diracbench.tasks import registry as task_registry

KINDS = sorted(OPERATOR_KINDS)
SIZES = [(16, 16), (24, 20)]
SEVERITIES = [0.0, 0.37, 1.0]
HAS_SCICO = all(importlib.util.find_spec(m) is not None for m in ("jax", "scico"))
SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "task.schema.yaml").read_text())


def make(kind: str, size=(16, 16), dtype=torch.float64):
    cls = OPERATOR_KINDS[kind].family
    return cls.from_config(cls.example_config, size, dtype=dtype)


def task_of(kind: str) -> str:
    return next(name for name, spec in task_registry().items() if spec.operator == kind)


def smooth_images(shape, seed=0) -> torch.Tensor:
    """Natural-image-like batch: smoothed noise (so every degradation visibly changes it)."""
    g = np.random.default_rng(seed).random(shape)
    return torch.from_numpy(scipy.ndimage.gaussian_filter(g, sigma=(0, 0, 1.0, 1.0)))


def randn(shape, seed) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def dense(op, shape) -> torch.Tensor:
    """The operator as an (n, n) float64 matrix acting on flattened (C, H, W) images."""
    n = int(np.prod(shape))
    cols = op.forward(torch.eye(n, dtype=torch.float64).reshape(n, *shape))
    return cols.reshape(n, -1).T


@pytest.fixture(params=[(k, s) for k in KINDS for s in SIZES], ids=lambda p: f"{p[0]}-{p[1][0]}x{p[1][1]}")
def family(request):
    kind, size = request.param
    return make(kind, size)


# ------------------------------------------------------------------------------------------------
# Registry and declarations


def test_every_task_kind_schema_branch_and_config_check_agree():
    assert {spec.operator for spec in task_registry().values()} == set(KINDS)
    branches = {b["properties"]["kind"]["const"]: b for b in SCHEMA["properties"]["operator"]["oneOf"]}
    assert set(branches) == set(KINDS)
    assert set(configcheck.OPERATOR_CHECKS) <= set(KINDS)
    import jsonschema

    for kind in KINDS:
        example = OPERATOR_KINDS[kind].family.example_config
        assert example["kind"] == kind
        assert not list(jsonschema.Draft202012Validator(branches[kind]).iter_errors(example))
        check = configcheck.OPERATOR_CHECKS.get(kind)
        assert check is None or not list(check(example, "op", {"d": 16}))


def test_unknown_kinds_are_user_errors_naming_the_registered_ones():
    with pytest.raises(UserError, match=re.escape(f"registered operator kinds: {KINDS}")):
        family_from_config({"kind": "denoise"}, 16)
    spec = operator_spec(make("blur"), GeometricNoise(0.01, 0.05), "deblur")
    spec["family"]["kind"] = "denoise"
    with pytest.raises(UserError, match="registered operator kinds"):
        family_from_spec(spec)
    from diracbench.scico_ops import build_operator

    with pytest.raises(UserError, match="registered operator kinds"):
        build_operator(spec, 1)


def test_severity_declaration_matches_operator_json(family):
    sev = family.severity
    d = family.to_dict()
    schedule_key, end_key = sev.keys
    assert sev.name and sev.label and getattr(family, sev.name) is sev.schedule
    assert d[schedule_key] == sev.schedule.to_dict()
    assert d[end_key] == pytest.approx(sev.end, abs=1e-12)
    assert sev.start < sev.end  # the parameter rises with t
    spec = operator_spec(family, GeometricNoise(0.01, 0.05), task_of(family.kind))
    assert parameter_range(spec) == (sev.label, sev.start, sev.end)


def test_shapes_are_declared(family):
    h, w = family.image_size
    assert family.x_shape == family.y_shape == (3, h, w)
    x = randn((2, 3, h, w), 0)
    for t in SEVERITIES:
        op = family.at(t)
        assert op.x_shape == family.x_shape and op.y_shape == family.y_shape
        assert tuple(op.forward(x).shape[1:]) == op.y_shape
        assert tuple(op.adjoint(op.forward(x)).shape[1:]) == op.x_shape


# ------------------------------------------------------------------------------------------------
# Linear algebra


@pytest.mark.parametrize("t", SEVERITIES)
def test_adjoint(family, t):
    x, u = randn((3, *family.x_shape), 1), randn((3, *family.y_shape), 2)
    op = family.at(t)
    assert torch.allclose((op.forward(x) * u).sum(), (x * op.adjoint(u)).sum(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", SEVERITIES)
def test_svd_reproduces_operator(family, t):
    x = randn((2, *family.x_shape), 3)
    op = family.at(t)
    svd = op.svd()
    assert torch.allclose(svd.apply(x), op.forward(x), atol=1e-9)
    assert torch.allclose(svd.V(svd.Vt(x)), x, atol=1e-9) and torch.allclose(svd.Vt(svd.V(x)), x, atol=1e-9)
    assert torch.allclose(svd.Ut(svd.U(x)), x, atol=1e-9) and torch.allclose(svd.U(svd.Ut(x)), x, atol=1e-9)
    s = svd.singular_values
    assert torch.all(s >= 0) and torch.broadcast_shapes(s.shape, op.y_shape) == op.y_shape
    assert svd.spectrum in (SEPARABLE, ELEMENTWISE)
    assert torch.equal(svd.thresholded(0.0), s.expand_as(svd.thresholded(0.0)))  # a zero threshold keeps all


def test_response_to_ones(family):
    ones = torch.ones(1, *family.x_shape, dtype=torch.float64)
    for t in SEVERITIES:
        op = family.at(t)
        assert torch.allclose(op.response_to_ones(ones), op.forward(ones), atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("t", [0.37, 1.0])
def test_normal_solve_and_data_prox_equal_dense_algebra(kind, t):
    op = make(kind, (8, 8)).at(t)
    shape = op.x_shape
    M = dense(op, shape)
    n = M.shape[1]
    b, z, y = randn((2, *shape), 4), randn((2, *shape), 5), randn((2, *op.y_shape), 6)
    rhos = torch.tensor([0.05, 2.0], dtype=torch.float64)
    c = 1.7
    got = op.normal_solve(b, rhos.reshape(2, 1, 1, 1), c)
    for i, rho in enumerate(rhos):
        want = torch.linalg.solve(c * M.T @ M + rho * torch.eye(n, dtype=torch.float64), b[i].reshape(-1))
        assert torch.allclose(got[i].reshape(-1), want, atol=1e-9)
    assert torch.allclose(op.normal_solve(b, 0.3), torch.linalg.solve(M.T @ M + 0.3 * torch.eye(n, dtype=torch.float64), b.reshape(2, -1).T).T.reshape(b.shape), atol=1e-9)
    gamma = 0.4
    prox = op.data_prox(z, y, gamma)
    want = torch.linalg.solve(M.T @ M + torch.eye(n, dtype=torch.float64) / gamma, (M.T @ y.reshape(2, -1).T + z.reshape(2, -1).T / gamma)).T
    assert torch.allclose(prox.reshape(2, -1), want, atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Severity


def test_severity_monotone_and_near_identity_at_zero(family):
    x = smooth_images((4, *family.x_shape))
    errors = [float((family.apply(x, t) - x).square().mean()) for t in np.linspace(0, 1, 11)]
    assert all(b > a for a, b in zip(errors, errors[1:])), errors
    assert float((family.apply(x, 0.0) - x).norm() / x.norm()) < 0.02  # the blur keeps a residual std 0.3


def test_per_image_severity_matches_scalar(family):
    x = smooth_images((3, *family.x_shape), seed=4)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    batched = family.apply(x, t)
    for i in range(3):
        assert torch.allclose(batched[i : i + 1], family.apply(x[i : i + 1], float(t[i])), atol=1e-12)


def test_nested_where_claimed(family):
    x = randn((2, *family.x_shape), 7)
    pairs = [(0.0, 0.4), (0.2, 0.7), (0.5, 1.0), (1.0, 1.0)]
    if family.transition(*pairs[0]) is None:
        pytest.skip(f"{family.kind} makes no nesting claim")
    for t, t_next in pairs:
        G = family.transition(t, t_next)  # one fixed linear map, whatever the image
        assert torch.allclose(family.apply(x, t_next), G.forward(family.apply(x, t)), atol=1e-10)


# ------------------------------------------------------------------------------------------------
# operator.json and the scico adapter


def test_operator_json_round_trip(family):
    spec = json.loads(json.dumps(operator_spec(family, GeometricNoise(0.01, 0.05), task_of(family.kind))))
    rebuilt = family_from_spec(spec)
    assert type(rebuilt) is type(family) and rebuilt.to_dict() == spec["family"]
    x = smooth_images((2, *family.x_shape)).float()
    assert torch.equal(rebuilt.apply(x, 1.0), family_from_config(family.example_config, family.image_size).apply(x, 1.0))
    sev = family.severity
    ok = TableSchedule.from_rows([0.0, 0.5, 1.0], [sev.start, (sev.start + sev.end) / 2, sev.end])
    assert torch.allclose(family_from_spec(spec, severity=ok).apply(x, 1.0), rebuilt.apply(x, 1.0))
    with pytest.raises(UserError, match="measurements use"):
        family_from_spec(spec, severity=TableSchedule.from_rows([0.0, 1.0], [sev.start, sev.end * 0.9]))


@pytest.mark.skipif(not HAS_SCICO, reason="jax/scico not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_scico_adapter_equals_the_torch_operator(kind):
    from diracbench.scico_ops import build_operator, configure_jax, jax_modules, per_image, to_nchw, to_nhwc

    configure_jax(1)
    _, jnp = jax_modules()
    fam = make(kind, (24, 20), dtype=torch.float32)
    spec = operator_spec(fam, GeometricNoise(0.01, 0.05), task_of(kind))
    torch_op = family_from_spec(spec).measurement_operator()
    op = build_operator(spec, 3)
    assert op.kind == kind and op.A.input_shape == op.A.output_shape == (3, 24, 20, 3)
    rng = np.random.default_rng(0)
    x, u = (rng.random((3, 3, 24, 20)).astype(np.float32) for _ in range(2))

    def jax_apply(f, a):
        return to_nchw(np.asarray(f(jnp.asarray(to_nhwc(a)))))

    np.testing.assert_allclose(jax_apply(op.A, x), torch_op.forward(torch.from_numpy(x)).numpy(), atol=2e-6)
    np.testing.assert_allclose(jax_apply(op.A.adj, u), torch_op.adjoint(torch.from_numpy(u)).numpy(), atol=2e-6)
    rho = [0.01, 0.3, 2.0]
    ours = jax_apply(lambda b: op.normal_solve(b, per_image(rho), 2.0), u)
    theirs = make(kind, (24, 20)).at(1.0).normal_solve(torch.from_numpy(u).double(), torch.tensor(rho, dtype=torch.float64).reshape(3, 1, 1, 1), 2.0)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4 * float(np.abs(theirs.numpy()).max()))
    x0 = jax_apply(lambda y: op.init(y, "measurement"), x)
    assert x0.shape == x.shape and np.all(np.isfinite(x0))


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_linear_and_from_file_schedules(tmp_path, kind):
    """The schedule tool works through the declared severity: greedy, its table fed back from_file,
    linear; each plugs into the family with the measurements' end points."""
    import pandas as pd

    from diracbench.dirac import scheduled_family
    from diracbench.schedule.__main__ import main as schedule_main

    fam = make(kind, (16, 16), dtype=torch.float32)
    op = tmp_path / "operator.json"
    op.write_text(json.dumps(operator_spec(fam, GeometricNoise(0.01, 0.05), task_of(kind))))
    train = tmp_path / "train.npy"
    np.save(train, (smooth_images((6, 3, 16, 16)).numpy() * 255).astype(np.uint8))
    sev = fam.severity
    runs = {
        "greedy": ({"kind": "greedy", "metric": "rmse", "grid_size": 20, "budget": 3, "n_images": 4}, []),
        "from_file": ({"kind": "from_file"}, ["--file", str(tmp_path / "greedy" / "schedule.csv")]),
        "linear": ({"kind": "linear"}, []),
    }
    for name, (cfg, extra) in runs.items():
        settings = json.dumps({"schedule": cfg, "seed": 0, "lpips": None})
        schedule_main(["--settings", settings, "--train", str(train), "--operator", str(op), "--out-dir", str(tmp_path / name), *extra])
        table = pd.read_csv(tmp_path / name / "schedule.csv")
        assert table["value"].iloc[0] == pytest.approx(sev.start) and table["value"].iloc[-1] == pytest.approx(sev.end)
        assert np.all(np.diff(table["value"]) > 0), (name, table)
        scheduled_family(json.loads(op.read_text()), tmp_path / name / "schedule.csv")


# ------------------------------------------------------------------------------------------------
# Super-resolution specifics


def test_sr_measurement_is_the_same_size_projection():
    fam = DownsampleFamily((16, 16), 4, LinearSchedule(0.0, 1.0), dtype=torch.float64)
    x = randn((2, 3, 16, 16), 8)
    y = fam.at(1.0).forward(x)
    means = x.reshape(2, 3, 4, 4, 4, 4).mean(dim=(3, 5))
    assert torch.allclose(y, means.repeat_interleave(4, -2).repeat_interleave(4, -1), atol=1e-14)  # P = U D
    assert torch.equal(fam.at(1.0).forward(y), y)  # idempotent: exactly, y lies in the range of P
    assert torch.equal(fam.apply(x, 0.0), x)  # strength 0: exactly the identity
    assert fam.transition(0.2, 0.9) is not None  # the family claims nesting (checked by the contract)
    for t in (0.0, 0.3, 0.8):
        assert torch.allclose(project(fam.apply(x, t), 4), y, atol=1e-14)  # P A_t = P
    svd = fam.at(1.0).svd()
    s = svd.singular_values
    assert int((s > 0).sum()) == 16 and torch.equal(s[0, ::4, ::4], torch.ones(4, 4, dtype=torch.float64))
    assert torch.allclose(svd.Vt(x)[..., ::4, ::4], 4 * means, atol=1e-12)  # block-mean coefficient first
    assert torch.allclose(svd.apply(x), y, atol=1e-12)
    assert torch.allclose(fam.at(0.5).svd().singular_values[0, 1:4, 1:4], torch.full((3, 3), 0.5, dtype=torch.float64))


def test_sr_factor_must_divide_the_image():
    with pytest.raises(UserError, match="divide"):
        family_from_config({"kind": "downsample", "factor": 3}, 16)
    problems = list(configcheck.OPERATOR_CHECKS["downsample"]({"kind": "downsample", "factor": 3}, "tasks.sr4.operator", {"photos": 16}))
    assert problems and "tasks.sr4.operator.factor" in problems[0]


def test_scico_adapters_live_where_the_workflow_finds_them():
    # workflow/rules/methods_common.smk makes operators/*_scico.py code inputs of the scico jobs;
    # an adapter elsewhere would let its edits rerun nothing.
    from pathlib import Path

    import diracbench.operators.registry as reg

    folder = Path(reg.__file__).parent
    for entry in reg.OPERATOR_KINDS.values():
        module, _, name = entry.scico_adapter.partition(":")
        assert module.startswith("diracbench.operators.") and module.endswith("_scico"), entry
        assert (folder / f"{module.rsplit('.', 1)[1]}.py").is_file() and callable(entry.scico), entry
