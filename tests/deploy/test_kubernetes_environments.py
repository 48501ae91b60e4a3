"""Staging and production are separate environments outside the cluster too: what each
rendered overlay names in the secret store, the backup bucket and DNS is its own. Sharing any
of it would let staging read production's passwords and keys, write (and prune) WAL and base
backups into production's archive, or answer for production's host."""

from __future__ import annotations

import itertools

from tests.helpers.kubernetes import OVERLAYS, Manifest, of_kind, overlay

STORE_ENVIRONMENTS = ("staging", "production")


def vault_paths(manifests: tuple[Manifest, ...]) -> set[tuple[str, str, str]]:
    """Each ExternalSecret key as Vault sees it: the store's server and KV mount, the key."""
    stores = {
        s["metadata"]["name"]: s["spec"]["provider"]["vault"]
        for s in of_kind(manifests, "SecretStore")
    }
    paths = set()
    for external in of_kind(manifests, "ExternalSecret"):
        store = stores[external["spec"]["secretStoreRef"]["name"]]
        refs = [d["remoteRef"] for d in external["spec"].get("data", [])]
        refs += [d["extract"] for d in external["spec"].get("dataFrom", []) if "extract" in d]
        paths |= {(store["server"], store["path"], ref["key"]) for ref in refs}
    return paths


def backup_destinations(manifests: tuple[Manifest, ...]) -> set[str]:
    return {
        s["spec"]["configuration"]["destinationPath"] for s in of_kind(manifests, "ObjectStore")
    }


def hosts(manifests: tuple[Manifest, ...]) -> set[str]:
    found = set()
    for ingress in of_kind(manifests, "Ingress"):
        found |= {rule["host"] for rule in ingress["spec"]["rules"]}
        found |= {host for tls in ingress["spec"].get("tls", []) for host in tls["hosts"]}
    for certificate in of_kind(manifests, "Certificate"):
        found |= set(certificate["spec"]["dnsNames"])
    return found


def test_each_environment_reads_its_own_paths_in_the_store() -> None:
    for env in STORE_ENVIRONMENTS:
        paths = vault_paths(overlay(env))
        assert len(paths) >= 8, env
        for _, _, key in paths:
            assert key.startswith(f"expensetracker/{env}/"), (env, key)
        [store] = of_kind(overlay(env), "SecretStore")
        # Each cluster logs into Vault through an auth mount of its own (its API server's CA).
        assert store["spec"]["provider"]["vault"]["auth"]["kubernetes"]["mountPath"] == (
            f"kubernetes-{env}"
        )
    staging, production = (vault_paths(overlay(env)) for env in STORE_ENVIRONMENTS)
    assert not staging & production, staging & production


def test_each_environment_archives_to_its_own_folder() -> None:
    staging, production = (backup_destinations(overlay(env)) for env in STORE_ENVIRONMENTS)
    assert len(staging) == len(production) == 1
    [staging_path], [production_path] = staging, production
    # Not the same folder, and neither inside the other (barman writes below it).
    assert not staging_path.startswith(production_path), (staging_path, production_path)
    assert not production_path.startswith(staging_path), (staging_path, production_path)
    for env, path in zip(STORE_ENVIRONMENTS, (staging_path, production_path), strict=True):
        assert path.rstrip("/").endswith(f"/{env}"), path


def test_no_two_environments_answer_for_the_same_host() -> None:
    for env in OVERLAYS:
        assert hosts(overlay(env)), env
    for first, second in itertools.combinations(OVERLAYS, 2):
        shared = hosts(overlay(first)) & hosts(overlay(second))
        assert not shared, (first, second, shared)
