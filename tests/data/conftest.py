"""Data tests run offline: any attempt to open a network connection fails immediately."""
import socket

import pytest


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in diffjax data tests")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    # Defaults must never point at a real home-directory dataset or cache.
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_default"))
    monkeypatch.setenv("DIFFJAX_DATA_DIR", str(tmp_path / "data_default"))
    monkeypatch.setenv("DIFFJAX_CACHE_DIR", str(tmp_path / "cache_default"))
