"""The cloud over TLS with the fleet's private CA, and gateway tokens known only by their sha256."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from cloud.auth import token_hash
from cloud.server import running
from cloud.settings import CloudSettings
from flcore.datasets import Dataset
from flcore.messages import Agg
from flcore.model import ModelSpec
from gateway.cloud_client import CloudClient, CloudError
from iotfl.pki import new_ca, server_cert

TOKEN = "the-gateway-token"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pki")
    ca = new_ca("test")
    server = server_cert(ca, "127.0.0.1", ["127.0.0.1", "localhost"])
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_pem,
        "key": server.key_pem,
        "other_ca": new_ca("other").cert_pem,
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    return {name: tmp / name for name in files}


def settings(db_url: str, pki: dict[str, Path], data: Dataset, **overrides: Any) -> CloudSettings:
    values: dict[str, Any] = dict(
        db=db_url,
        port=0,
        dataset=data.name,
        gateway_token_hashes=f"gw0={token_hash(TOKEN)}",
        tls_cert=pki["cert"],
        tls_key=pki["key"],
    )
    values.update(overrides)
    return CloudSettings(**values)


@pytest.fixture
def https_cloud(db_url: str, pki: dict[str, Path], dataset: Dataset) -> Iterator[str]:
    with running(settings(db_url, pki, dataset), dataset) as url:
        yield url


def test_gateway_with_the_fleet_ca_talks_to_the_cloud(https_cloud: str, pki: dict[str, Path]) -> None:
    assert https_cloud.startswith("https://127.0.0.1:")
    client = CloudClient(https_cloud, TOKEN, ca=pki["ca"])
    info = client.current()
    assert info.round == 1 and info.state == "open"
    spec = ModelSpec(info.layers)
    agg = Agg("gw0", 1, info.base, 10, 1, np.zeros(spec.param_count, np.float32), 0.5)
    assert client.send(1, agg.encode()).result == "accepted"  # the hashed token authenticates
    intruder = CloudClient(https_cloud, "a-guessed-token", ca=pki["ca"])
    assert intruder.send(1, agg.encode()).result == "http_401"
    client.close(), intruder.close()


def test_another_ca_or_no_ca_fails_verification(https_cloud: str, pki: dict[str, Path]) -> None:
    for client in (CloudClient(https_cloud, TOKEN, ca=pki["other_ca"]), CloudClient(https_cloud, TOKEN)):
        with pytest.raises(CloudError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            client.current()
        client.close()


def test_settings_refuse_half_tls_and_bad_hashes(tmp_path: Path, pki: dict[str, Path], dataset: Dataset) -> None:
    db = f"sqlite:///{tmp_path / 'cloud.db'}"  # never opened: the settings or the TLS check refuse first
    with pytest.raises(ValidationError, match="needs both tls_cert and tls_key"):
        settings(db, pki, dataset, tls_key=None)
    with pytest.raises(ValidationError, match="64 hex digits of its sha256"):
        settings(db, pki, dataset, gateway_token_hashes="gw0=abc")
    with pytest.raises(ValidationError, match="both a token and a token hash"):
        settings(db, pki, dataset, gateway_tokens={"gw0": TOKEN})
    bad_key = tmp_path / "wrong.key"
    bad_key.write_text(server_cert(new_ca("x"), "h", ["h"]).key_pem)  # not the certificate's key
    with pytest.raises(ValueError, match="cannot use TLS certificate"):
        with running(settings(db, pki, dataset, tls_key=bad_key), dataset):
            pass
