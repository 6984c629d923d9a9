"""shared/security/links.py: signed, expiring, revocable links to one job's artifacts (pure parts,
on a LocalStore; the real artifacts process is in security/test_signed_links.py)."""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime

import pytest
from itsdangerous import URLSafeTimedSerializer

from shared.core.errors import InputError
from shared.core.settings import Settings
from shared.security import links
from shared.storage.store import LocalStore

pytestmark = pytest.mark.unit

SECRET = "unit-link-secret-" + "k" * 32
JOB, OTHER_JOB = "job-00000000000000aa", "job-00000000000000bb"


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "store")


def _settings(**kw) -> Settings:
    values = {"jwt_secret": SECRET, "link_ttl_seconds": 600, "auth_cache_seconds": 0,
                  "artifacts_url": "https://udb.example/"}
    values.update(kw)
    return Settings(**values)


def _token(link: dict) -> str:
    return link["path"].split("/")[2]


def test_enabled_needs_a_32_character_secret_and_a_lifetime():
    assert links.enabled(_settings())
    assert not links.enabled(_settings(jwt_secret="x" * 31))
    assert not links.enabled(_settings(jwt_secret=""))
    assert not links.enabled(_settings(link_ttl_seconds=0))


def test_sign_gives_a_path_url_and_expiry(store):
    before = int(time.time())
    link = links.Links(_settings(), store).sign("acme", JOB)
    token = _token(link)
    assert link["path"] == f"/s/{token}/artifact/{JOB}/index.html"
    assert link["url"] == "https://udb.example" + link["path"]
    assert before + 600 <= datetime.fromisoformat(link["expires"]).timestamp() <= int(time.time()) + 600
    claims = URLSafeTimedSerializer(SECRET, salt=links.SALT,
                                    signer_kwargs={"digest_method": hashlib.sha256}).loads(token)
    assert claims == {"t": "acme", "j": JOB, "g": "0"}


def test_sign_refuses_bad_ids_and_a_missing_secret(store):
    with pytest.raises(InputError, match="invalid tenant id"):
        links.Links(_settings(), store).sign("Acme", JOB)
    with pytest.raises(InputError, match="invalid job id"):
        links.Links(_settings(), store).sign("acme", "job-1")
    with pytest.raises(InputError, match="UDB_JWT_SECRET"):
        links.Links(_settings(jwt_secret=""), store).sign("acme", JOB)


def test_verify_opens_the_signed_job_only(store):
    signer = links.Links(_settings(), store)
    token = _token(signer.sign("acme", JOB))
    assert signer.verify(token, JOB) == "acme"
    with pytest.raises(links.LinkRefused, match="another job") as refused:
        signer.verify(token, OTHER_JOB)
    assert refused.value.status == 403
    with pytest.raises(links.LinkRefused) as refused:
        signer.verify(token, None)
    assert refused.value.status == 403


@pytest.mark.parametrize("mangle,reason", [
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "does not verify"),
    (lambda t: "short", "malformed link"),
    (lambda t: t + "/x", "malformed link"),
    (lambda t: "", "malformed link"),
])
def test_tampered_tokens_are_401(store, mangle, reason):
    signer = links.Links(_settings(), store)
    token = _token(signer.sign("acme", JOB))
    with pytest.raises(links.LinkRefused, match=reason) as refused:
        signer.verify(mangle(token), JOB)
    assert refused.value.status == 401


def test_a_token_signed_with_another_secret_does_not_verify(store):
    token = _token(links.Links(_settings(jwt_secret="another-secret-" + "z" * 30), store).sign("acme", JOB))
    with pytest.raises(links.LinkRefused, match="does not verify"):
        links.Links(_settings(), store).verify(token, JOB)


def test_expired_links_are_refused(store):
    signer = links.Links(_settings(), store)
    old = URLSafeTimedSerializer(SECRET, salt=links.SALT, signer_kwargs={"digest_method": hashlib.sha256})
    # Sign as of 601 s ago (itsdangerous reads the clock through `get_timestamp`).
    signer_obj = old.make_signer(links.SALT)
    signer_obj.get_timestamp = lambda: int(time.time()) - 601
    payload = old.dump_payload({"t": "acme", "j": JOB, "g": "0"})
    token = signer_obj.sign(payload).decode()
    with pytest.raises(links.LinkRefused, match="link expired") as refused:
        signer.verify(token, JOB)
    assert refused.value.status == 401


def test_verify_when_links_are_off(store):
    with pytest.raises(links.LinkRefused, match="signed links are off") as refused:
        links.Links(_settings(link_ttl_seconds=0), store).verify("x" * 40, JOB)
    assert refused.value.status == 401


def test_generations_start_at_zero_and_rotate_ends_older_links(store):
    assert links.current_generation(store, "acme") == "0"
    signer = links.Links(_settings(), store)
    token = _token(signer.sign("acme", JOB))
    generation = links.rotate(store, "acme")
    assert links.current_generation(store, "acme") == generation != "0"
    record = json.loads(store.get("auth/links/acme.json").data)
    assert record["tenant"] == "acme" and record["generation"] == generation
    with pytest.raises(links.LinkRefused, match="link revoked"):
        signer.verify(token, JOB)
    fresh = _token(signer.sign("acme", JOB))
    assert signer.verify(fresh, JOB) == "acme"
    # Another tenant's links are untouched.
    assert links.current_generation(store, "other") == "0"


def test_a_process_caches_the_generation_for_auth_cache_seconds(store):
    signer = links.Links(_settings(auth_cache_seconds=3600), store)
    token = _token(signer.sign("acme", JOB))
    assert signer.verify(token, JOB) == "acme"   # caches generation "0"
    links.rotate(store, "acme")
    assert signer.verify(token, JOB) == "acme"   # still within the cache time
    assert pytest.raises(links.LinkRefused, links.Links(_settings(), store).verify, token, JOB)


def test_redact_path():
    assert links.redact_path("/s/abc.DEF_123/artifact/job-1/index.html") == "/s/<token>/artifact/job-1/index.html"
    assert links.redact_path("/artifact/job-1/index.html") == "/artifact/job-1/index.html"
    assert links.redact_path("") == ""
    assert links.redact_path(None) == ""
