"""datasets/cohort.py: AS-norm cohorts from an extraction job's parquet files or a .npy matrix."""

import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from datasets.cohort import CohortError, load_cohort  # noqa: E402


def test_parquet_and_npy_cohorts_come_back_unit_length(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6)).astype(np.float32) * 3
    # the columns ray_jobs.extract writes to speakers.parquet
    table = pa.table(
        {"key": [f"ds_s{i}" for i in range(5)], "dataset": ["ds"] * 5,
         "speaker_id": [f"s{i}" for i in range(5)], "num_utterances": [2] * 5,
         "embedding": pa.array(list(x), pa.list_(pa.float32()))}
    )  # fmt: skip
    pq.write_table(table, tmp_path / "speakers.parquet")
    np.save(tmp_path / "c.npy", x)
    for path in (tmp_path / "speakers.parquet", tmp_path / "c.npy"):
        c = load_cohort(path, embed_dim=6)
        assert c.shape == (5, 6) and c.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(c, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)


def test_bad_cohorts_say_what_to_do(tmp_path):
    with pytest.raises(CohortError, match="ray_jobs.extract"):
        load_cohort(tmp_path / "missing.parquet")
    np.save(tmp_path / "c.npy", np.ones((4, 6), np.float32))
    with pytest.raises(CohortError, match="same model"):
        load_cohort(tmp_path / "c.npy", embed_dim=8)
    np.save(tmp_path / "one.npy", np.ones((1, 6), np.float32))
    with pytest.raises(CohortError, match="C >= 2"):
        load_cohort(tmp_path / "one.npy")
    (tmp_path / "c.txt").write_text("1 2 3")
    with pytest.raises(CohortError, match=".parquet"):
        load_cohort(tmp_path / "c.txt")
    pq.write_table(pa.table({"key": ["a"]}), tmp_path / "nokey.parquet")
    with pytest.raises(CohortError, match="embedding"):
        load_cohort(tmp_path / "nokey.parquet")
