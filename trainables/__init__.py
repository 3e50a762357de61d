"""The work of one trial: models, data, the epoch loop, and one module per trainable.

Every trainable is `run(config: dict, reporter: Reporter) -> None`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainables import finetune, lora, prune_recover, train

TRAINABLES: dict[str, Callable[[dict[str, Any], Any], None]] = {
    "train": train.run,
    "finetune": finetune.run,
    "lora": lora.run,
    "prune_recover": prune_recover.run,
}
