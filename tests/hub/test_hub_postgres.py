"""The hub tables on PostgreSQL: repos, revision files (with cascade), tokens."""

from __future__ import annotations

import pytest

from adapterhub.app import AdapterHub
from tests.helpers import postgres_database, write_random_adapter


@pytest.mark.postgres
def test_hub_tables_on_postgresql(tmp_path, postgres_admin):
    with postgres_database(postgres_admin) as url:
        hub = AdapterHub(tmp_path / "home", database_url=url)
        folder = write_random_adapter(tmp_path / "a", seed=1)
        assert hub.hub_create_repo("pg/x", private=True) and not hub.hub_create_repo("pg/x")
        with hub.hub_staging() as staging:
            for path in folder.iterdir():
                staging.add_bytes(path.name, path.read_bytes())
            staging.add_bytes("README.md", b"# hi\n")
            sha = hub.hub_commit("pg/x", staging)
        snapshot = hub.hub_snapshot("pg/x")
        assert snapshot.revision == sha and snapshot.private
        assert snapshot.files["README.md"].read_small() == b"# hi\n"
        secret = hub.create_token(name="t", write=False)["token"]
        assert hub.check_token(secret).name == "t" and hub.hub_private_repos() == {"pg/x"}
        assert hub.hub_referenced_digests() == {snapshot.files["README.md"].sha256}
        hub.revoke_token("t")
        hub.remove("pg/x")
        assert hub.hub_referenced_digests() == set()  # ON DELETE CASCADE through adapter_revisions
        hub.close()
