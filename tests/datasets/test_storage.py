"""datasets/storage.py on the local filesystem and on a real S3-compatible server (moto in
server mode on loopback, ``tests/s3_server.py``), through the same functions."""

from __future__ import annotations

import pytest

from datasets import storage


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/prefix"


def test_write_read_list_exists(root, tmp_path):
    report = storage.join(root, "a", "report.json")
    assert not storage.exists(report) and storage.list_files(root) == []
    storage.write_text(report, '{"eer": 0.1}')
    storage.write_bytes(storage.join(root, "b.bin"), b"\x00\x01")
    assert storage.exists(report) and storage.is_file(report)
    assert storage.read_text(report) == '{"eer": 0.1}'
    assert storage.list_files(root) == ["a/report.json", "b.bin"]
    assert storage.list_files(root, recursive=False) == ["b.bin"]
    with pytest.raises(FileNotFoundError, match="missing.json"):
        storage.read_bytes(storage.join(root, "missing.json"))
    # a file is replaced whole
    storage.write_text(report, "second")
    assert storage.read_text(report) == "second"


def test_upload_tree_fetch_and_staged_output(root, tmp_path):
    src = tmp_path / "src"
    (src / "rttm").mkdir(parents=True)
    (src / "rttm" / "x.rttm").write_text("SPEAKER x 1 0.0 1.0 <NA> <NA> s0 <NA> <NA>\n")
    (src / "summary.json").write_text("{}")
    assert storage.upload_tree(src, root) == ["rttm/x.rttm", "summary.json"]
    local = storage.fetch(storage.join(root, "rttm", "x.rttm"), cache=tmp_path / "cache")
    assert local.read_text().startswith("SPEAKER x")
    # the cache is reused while the object is unchanged, refreshed when it changes
    assert storage.fetch(storage.join(root, "rttm", "x.rttm"), cache=tmp_path / "cache") == local
    storage.write_text(storage.join(root, "rttm", "x.rttm"), "changed, longer\n")
    again = storage.fetch(storage.join(root, "rttm", "x.rttm"), cache=tmp_path / "cache")
    assert again.read_text() == "changed, longer\n"

    out = storage.join(root, "job")
    with storage.staged_output(out) as folder:
        (folder / "emb.npy").write_bytes(b"123")
    assert storage.list_files(out) == ["emb.npy"]
    if storage.is_local(root):
        return  # a local job writes in place: no staging, nothing to upload
    # a failed job uploads nothing
    failed = storage.join(root, "failed")
    with pytest.raises(RuntimeError), storage.staged_output(failed) as folder:
        (folder / "half.npy").write_bytes(b"1")
        raise RuntimeError("job failed")
    assert storage.list_files(failed) == []


def test_uri_and_path_helpers(tmp_path):
    assert storage.is_uri("s3://b/p") and storage.is_uri("gs://b/p")
    assert storage.is_local("runs/x") and storage.is_local("file:///tmp/x")
    assert (
        storage.join("s3://b/p?endpoint_override=h:9", "m.pt")
        == "s3://b/p/m.pt?endpoint_override=h:9"
    )
    assert storage.join(tmp_path, "m.pt") == str(tmp_path / "m.pt")
    fs, path = storage.resolve(tmp_path)
    assert path == str(tmp_path) and fs.type_name == "local"
    with pytest.raises(storage.StorageError, match="cannot open storage nope://"):
        storage.resolve("nope://x/y")
    with pytest.raises(FileNotFoundError):
        storage.fetch(tmp_path / "none.pt")


def test_s3_uri_reads_the_standard_aws_variables(s3_bucket, s3_endpoint):
    """No voxray-specific set-up: pyarrow's S3 client finds the server through
    AWS_ENDPOINT_URL and the AWS credentials variables the fixture exported."""
    fs, path = storage.resolve(s3_bucket + "/x")
    assert fs.type_name == "s3" and path == s3_bucket.removeprefix("s3://") + "/x"
    storage.write_text(s3_bucket + "/x/k.txt", "v")
    import boto3

    body = (
        boto3.client("s3", endpoint_url=s3_endpoint)
        .get_object(Bucket=s3_bucket.removeprefix("s3://"), Key="x/k.txt")["Body"]
        .read()
    )
    assert body == b"v"
