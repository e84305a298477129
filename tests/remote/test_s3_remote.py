"""Sharing a run through an S3 remote (moto's server on 127.0.0.1), with the README's recipe: push from clone A,
`git clone` + `dvc pull` into B, refusal of damaged objects, `ssmttm remote-check` and its repair, `dvc import`."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from tests.remote.remote_project import (
    BUCKET,
    DUMMY_KEY,
    GIT,
    MODEL,
    SHARD,
    add_s3_remote,
    clone,
    commit,
    configure_s3_credentials,
    dvc,
    make_project,
    object_key,
    run,
    s3_client,
    ssmttm,
    tool_env,
    versioned_files,
)

pytestmark = pytest.mark.remote

PREFIX = "ssmttm"


@pytest.fixture(scope="module")
def clone_a(repo_root, tmp_path_factory, moto_endpoint) -> Path:
    """Clone A: the tiny run, an S3 default remote committed (README recipe), pushed."""
    project = make_project(repo_root, tmp_path_factory.mktemp("s3") / "clone-a")
    add_s3_remote(project, moto_endpoint, PREFIX)
    commit(project, "S3 remote")
    assert "8 files pushed" in run(dvc("push"), project).stdout  # 2 manifests, 3 shards, model, history, summary
    return project


def lock_md5(project: Path, artifact: str) -> str:
    """The md5 of a file output, or of a file inside a folder output (read from the local cache's manifest)."""
    import json

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage["outs"]:
            if out["path"] == artifact:
                return out["md5"]
            if artifact.startswith(out["path"] + "/"):
                manifest = project / ".dvc/cache/files/md5" / out["md5"][:2] / out["md5"][2:]
                relpath = artifact[len(out["path"]) + 1 :]
                return next(e["md5"] for e in json.loads(manifest.read_text()) if e["relpath"] == relpath)
    raise KeyError(artifact)


@contextlib.contextmanager
def damaged(endpoint: str, key: str, how: str):
    """Replace a remote object in place (`corrupt`: one byte changed, same size; `truncate`: first half kept, as an
    interrupted upload leaves it; `delete`), and put the original back afterwards."""
    client = s3_client(endpoint)
    original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    if how == "corrupt":
        client.put_object(Bucket=BUCKET, Key=key, Body=bytes([original[0] ^ 0xFF]) + original[1:])
    elif how == "truncate":
        client.put_object(Bucket=BUCKET, Key=key, Body=original[: len(original) // 2])
    else:
        client.delete_object(Bucket=BUCKET, Key=key)
    try:
        yield
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=original)


def fresh_clone(clone_a: Path, endpoint: str, name: str) -> Path:
    target = clone(clone_a, clone_a.parent / name)
    configure_s3_credentials(target, endpoint)
    return target


def test_push_git_clone_pull_is_byte_identical_and_clean(clone_a, moto_endpoint):
    clone_b = fresh_clone(clone_a, moto_endpoint, "clone-b")
    run(dvc("pull"), clone_b)
    assert versioned_files(clone_b) == versioned_files(clone_a)
    assert MODEL in versioned_files(clone_b)
    assert "Data and pipelines are up to date." in run(dvc("status"), clone_b).stdout
    assert "in sync" in run(dvc("status", "-c"), clone_b).stdout
    check = run(ssmttm("remote-check"), clone_b)
    assert "8 objects checked, 8 good, 0 bad, 0 missing" in check.stdout


@pytest.mark.parametrize(("how", "artifact"), [("corrupt", MODEL), ("truncate", "results/summary.json")])
def test_a_damaged_remote_object_is_refused_on_pull_naming_the_artifact(clone_a, moto_endpoint, how, artifact):
    target = fresh_clone(clone_a, moto_endpoint, f"clone-{how}-{Path(artifact).name}")
    with damaged(moto_endpoint, object_key(PREFIX, lock_md5(clone_a, artifact)), how):
        pull = run(dvc("pull"), target, check=False)
    assert pull.returncode != 0
    folder_output = "results/train_lm" if artifact == MODEL else artifact
    assert folder_output in pull.stderr  # DVC names the output; remote-check names the file (next tests)
    assert not (target / artifact).exists()  # the bad bytes are neither in the workspace nor in the cache
    assert f"not in cache:       {folder_output}" in run(dvc("status"), target).stdout
    # The same clone pulls the repaired remote.
    run(dvc("pull"), target)
    assert versioned_files(target) == versioned_files(clone_a)


def test_remote_check_finds_a_truncated_object_that_push_and_status_miss_and_delete_bad_repairs(clone_a, moto_endpoint):
    key = object_key(PREFIX, lock_md5(clone_a, SHARD))
    client = s3_client(moto_endpoint)
    original = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=key, Body=original[:1000])  # what an interrupted push leaves
    try:
        assert "in sync" in run(dvc("status", "-c"), clone_a).stdout  # DVC does not see it ...
        run(dvc("push"), clone_a)  # ... and does not resend it
        assert len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == 1000

        check = run(ssmttm("remote-check"), clone_a, check=False)
        assert check.returncode == 1
        assert f"BAD {SHARD}: 1000 bytes, expected {len(original)}" in check.stdout
        assert len([line for line in check.stdout.splitlines() if line.startswith(("BAD", "MISSING"))]) == 1
        assert "8 objects checked, 7 good, 1 bad, 0 missing" in check.stdout
        assert "--delete-bad" in check.stdout  # the repair is named
        assert "remote-check store" in check.stderr  # progress goes to stderr

        repair = run(ssmttm("remote-check", "--remote", "store", "--delete-bad"), clone_a, check=False)
        assert repair.returncode == 1 and "deleted 2 objects" in repair.stdout  # the shard and its folder's manifest
        assert "dvc push -r store" in repair.stdout
        assert "2 files pushed" in run(dvc("push", "-r", "store"), clone_a).stdout
        assert "8 good, 0 bad, 0 missing" in run(ssmttm("remote-check"), clone_a).stdout
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == original
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=original)


def test_remote_check_names_a_missing_object_and_a_missing_remote(clone_a, moto_endpoint):
    with damaged(moto_endpoint, object_key(PREFIX, lock_md5(clone_a, MODEL)), "delete"):
        check = run(ssmttm("remote-check", "--lock", str(clone_a / "dvc.lock")), clone_a.parent, check=False)
    assert check.returncode == 1
    assert f"MISSING {MODEL}: no object" in check.stdout
    wrong = run(ssmttm("remote-check", "--remote", "nowhere"), clone_a, check=False)
    assert wrong.returncode == 1 and "nowhere" in wrong.stderr and "Traceback" not in wrong.stderr


def test_another_project_imports_the_token_shards_from_the_repo_and_its_s3_remote(clone_a, moto_endpoint, tmp_path):
    """The data-registry pattern: the git repository as a server holds it (a bare clone: no DVC cache to borrow
    from), the data come from its S3 remote; the importing project's credentials come from the environment."""
    origin = tmp_path / "origin.git"
    run([*GIT, "clone", "-q", "--bare", str(clone_a), str(origin)], tmp_path)
    consumer = tmp_path / "consumer"
    (consumer / "data").mkdir(parents=True)
    run([*GIT, "init", "-q"], consumer)
    run(dvc("init", "-q"), consumer)
    env = dict(tool_env(), AWS_ENDPOINT_URL=moto_endpoint, AWS_ACCESS_KEY_ID=DUMMY_KEY, AWS_SECRET_ACCESS_KEY=DUMMY_KEY)
    run(dvc("import", str(origin), "data/tokenize", "-o", "data/tokens"), consumer, env=env)
    shards = sorted((consumer / "data/tokens").iterdir())
    assert [p.name for p in shards] == ["shard-000.parquet", "shard-001.parquet", "shard-002.parquet"]
    for shard in shards:
        assert shard.read_bytes() == (clone_a / "data/tokenize" / shard.name).read_bytes()
    record = yaml.safe_load((consumer / "data/tokens.dvc").read_text())
    head = run([*GIT, "rev-parse", "HEAD"], clone_a).stdout.strip()
    assert record["deps"][0]["repo"]["rev_lock"] == head  # the version is pinned; `dvc update` moves it
    assert "up to date" in run(dvc("status"), consumer, env=env).stdout
    assert run(dvc("update", "data/tokens.dvc"), consumer, env=env).returncode == 0
