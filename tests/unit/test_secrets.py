import pytest

from shared.core.errors import InputError, NotFound
from shared.security.secrets import LocalSecretStore, ref

pytestmark = pytest.mark.unit


def test_local_secrets_are_encrypted_per_tenant(tmp_path):
    store = LocalSecretStore(tmp_path)
    store.put("acme", "pg.password", "s3cr3t-value")
    store.put("other", "pg.password", "another")
    assert store.get("acme", "pg.password") == "s3cr3t-value"
    assert store.names("acme") == ["pg.password"]
    for path in tmp_path.iterdir():
        assert b"s3cr3t-value" not in path.read_bytes()  # nothing in clear on disk
    assert oct((tmp_path / "acme.enc").stat().st_mode & 0o777) == "0o600"
    assert LocalSecretStore(tmp_path).get("acme", "pg.password") == "s3cr3t-value"  # same key file
    store.delete("acme", "pg.password")
    with pytest.raises(NotFound):
        store.get("acme", "pg.password")
    assert store.get("other", "pg.password") == "another"
    with pytest.raises(InputError):
        store.put("acme", "../x", "v")
    with pytest.raises(InputError):
        store.get("../acme", "x")
    assert ref("oauth.graph") == "secret://oauth.graph"
