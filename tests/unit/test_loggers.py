"""W&B mode and secret masking, without starting W&B."""

from __future__ import annotations

import pytest

from purld.cli.loggers import wandb_has_credentials, wandb_mode, without_secrets


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_offline_without_credentials(no_credentials):
    assert not wandb_has_credentials()
    assert wandb_mode("auto") == "offline"


def test_online_with_a_key_or_a_netrc_entry(no_credentials, monkeypatch):
    (no_credentials / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (no_credentials / ".netrc").chmod(0o600)
    assert wandb_mode("auto") == "online"
    (no_credentials / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"


def test_explicit_modes_win(no_credentials, monkeypatch):
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "offline"  # the user's own WANDB_MODE is respected


def test_secrets_are_masked_at_any_depth_but_variable_names_are_not():
    config = {"teacher": {"api_key": "sk-1", "api_key_env": "MY_KEY", "model": "m"}, "hub_token": "t", "x": [{"password": "p"}]}
    assert without_secrets(config) == {
        "teacher": {"api_key": "***", "api_key_env": "MY_KEY", "model": "m"},
        "hub_token": "***",
        "x": [{"password": "***"}],
    }
