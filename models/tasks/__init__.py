"""Ray-free training tasks; importing this package registers them."""

from __future__ import annotations

import models.tasks.classify  # noqa: F401
import models.tasks.codec  # noqa: F401
import models.tasks.speaker  # noqa: F401
import models.tasks.tse  # noqa: F401
