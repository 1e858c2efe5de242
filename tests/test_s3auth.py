"""S3 credentials per purpose (lpdvae.host.s3auth): each client reads its own prefix only, and the
templates' placeholder is refused before anything connects."""

from __future__ import annotations

import pytest

from lpdvae.errors import LpdvaeError
from lpdvae.host.s3auth import purpose_env, refuse_placeholders, s3_client

PLANTED = {"LPDVAE_DATA_AWS_ACCESS_KEY_ID": "AKIA-DATA", "LPDVAE_DATA_AWS_SECRET_ACCESS_KEY": "data-secret",
           "LPDVAE_ARTIFACTS_AWS_ACCESS_KEY_ID": "AKIA-ARTIFACTS",
           "LPDVAE_ARTIFACTS_AWS_SECRET_ACCESS_KEY": "artifacts-secret",
           "LPDVAE_ARTIFACTS_AWS_ENDPOINT_URL": "http://artifacts.example:9000",
           "AWS_ACCESS_KEY_ID": "AKIA-PLAIN", "AWS_SECRET_ACCESS_KEY": "plain-secret"}


def credentials(client) -> tuple[str, str]:
    creds = client._request_signer._credentials.get_frozen_credentials()
    return creds.access_key, creds.secret_key


def test_each_purposes_client_signs_with_its_own_key_only(monkeypatch):
    for k, v in PLANTED.items():
        monkeypatch.setenv(k, v)
    assert credentials(s3_client("data")) == ("AKIA-DATA", "data-secret")
    assert credentials(s3_client("artifacts")) == ("AKIA-ARTIFACTS", "artifacts-secret")


def test_a_purposes_endpoint_is_its_own(monkeypatch):
    for k, v in PLANTED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert s3_client("artifacts").meta.endpoint_url == "http://artifacts.example:9000"
    assert "artifacts.example" not in s3_client("data").meta.endpoint_url


def test_a_purpose_without_its_own_variables_uses_boto3s_defaults(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-PLAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plain-secret")
    for k in PLANTED:
        if k.startswith("LPDVAE_DATA_"):
            monkeypatch.delenv(k, raising=False)
    assert credentials(s3_client("data")) == ("AKIA-PLAIN", "plain-secret")


def test_purpose_env_reads_only_its_prefix():
    assert purpose_env("data", PLANTED) == {"AWS_ACCESS_KEY_ID": "AKIA-DATA", "AWS_SECRET_ACCESS_KEY": "data-secret"}


def test_a_placeholder_secret_is_refused_naming_the_variable_not_the_value():
    with pytest.raises(LpdvaeError, match="LPDVAE_DATA_AWS_SECRET_ACCESS_KEY") as err:
        refuse_placeholders({"LPDVAE_DATA_AWS_SECRET_ACCESS_KEY": "CHANGE_ME", "OTHER": "fine-value"})
    assert "fine-value" not in str(err.value)


def test_a_client_for_a_purpose_with_placeholder_keys_is_refused(monkeypatch):
    monkeypatch.setenv("LPDVAE_ARTIFACTS_AWS_ACCESS_KEY_ID", "CHANGE_ME")
    with pytest.raises(LpdvaeError, match="placeholder"):
        s3_client("artifacts")
