"""What must survive a restart besides the torch objects' own state dicts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    done: bool = False
    train_time_s: float = 0.0
    train_samples: int = 0
    run_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_log: list[dict[str, Any]] = field(default_factory=list)
