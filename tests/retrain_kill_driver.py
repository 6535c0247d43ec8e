"""A retraining run to be killed: ``python -m tests.retrain_kill_driver OPTIONS_JSON READY_FILE``.

Runs retrain-reward-model with the options in ``OPTIONS_JSON``, its training step replaced by a pause
that writes ``READY_FILE`` and sleeps, so that a test can kill the process (SIGKILL) inside the run's
locked section at a known point. The production code is untouched; only this process is patched."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import flows.retrain_reward_model as retrain


def main(options_path: str, ready_path: str) -> None:
    options = json.loads(Path(options_path).read_text())

    def pause(*args: object, **kwargs: object) -> None:
        Path(ready_path).write_text("inside the locked section, training")
        time.sleep(3600)

    retrain.train_task = pause
    retrain.retrain_reward_model(**options)


if __name__ == "__main__":
    main(*sys.argv[1:3])
