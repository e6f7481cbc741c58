"""One real ``ray start --head`` (token auth on, own ports and temp dir) shared by the cluster
tests of this package, and stopped after them: the rest of the session runs beside one Ray
cluster, not two (an idle head still costs CPU and memory on a 2-core runner). See
``tests/cluster_head.py``."""

from __future__ import annotations

import pytest

from tests.cluster_head import LocalHead, local_head


@pytest.fixture(scope="package")
def ray_head() -> LocalHead:
    with local_head(num_cpus=2) as head:
        yield head
