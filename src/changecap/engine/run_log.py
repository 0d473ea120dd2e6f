"""Run logging: ``metrics.jsonl`` (always) and TensorBoard (when asked for and installed). Rank 0 only.

Each line of ``metrics.jsonl`` is one JSON object with ``kind`` (``train`` or ``val``), ``step`` (optimiser updates
done) and ``epoch``, plus the figures. When a run resumes from a checkpoint, lines written after that checkpoint
(by the interrupted process) are dropped so that the file describes the run as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from changecap.data.files import atomic_write_text

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    """Appends records to ``metrics.jsonl`` and mirrors numeric values to TensorBoard."""

    def __init__(self, output_dir: str | os.PathLike[str], tensorboard: bool = False, resume_step: int | None = None):
        self.path = Path(output_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        else:
            self._truncate_after(resume_step)
        self._file: TextIO | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print(
                    "warning: logging.tensorboard is on but TensorBoard is not installed "
                    "(pip install 'changecap[tensorboard]'); logging to metrics.jsonl only",
                    file=sys.stderr,
                )
            else:
                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """Keep only records up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the crash
            if int(rec.get("step", 0)) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def log(self, kind: str, step: int, epoch: int, values: dict[str, Any]) -> None:
        record = {"kind": kind, "step": step, "epoch": epoch, **values}
        if self._file is not None:
            self._file.write(json.dumps(record, allow_nan=True) + "\n")
            self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
