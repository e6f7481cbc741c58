"""One real ``ray start --head`` (token auth on, own ports and temp dir) shared by the cluster
tests of a session; see ``tests/cluster_head.py``."""

from __future__ import annotations

import pytest

from tests.cluster_head import LocalHead, local_head


@pytest.fixture(scope="session")
def ray_head() -> LocalHead:
    with local_head(num_cpus=2) as head:
        yield head
