"""TensorBoard files a person can read: tags grouped by meaning, Tune's bookkeeping left out, HParams true to the trial.

Tune's own TBXLoggerCallback writes every reported key flat under `ray/tune/` (beside `done`,
`should_checkpoint`, `iterations_since_restore`, …) and marks every ended trial STATUS_SUCCESS. This
one writes, per trial (one TensorBoard run):
    acc/mean, acc/seen, acc/unseen, acc/macro, acc/<device>        validation split, per epoch
    test_acc/…                                                      test split (last epoch of a complete trial)
    loss/train, eer/val, eer/test, min_dcf/val, min_dcf/test          other figures
    train/lr, train/clips_per_second, …                             anything else a trial reports
a custom-scalars layout (the CUSTOM SCALARS tab) with one chart of a line per device, and HParams
with the trial's searched values, its `status` (complete, stopped, failed), the session status
(success, unknown for a trial stopped early, failure), and for a reference trial its source trial.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from trainables.asc.metrics import DEVICE_GROUPS

# Tune's bookkeeping, not results.
_DROPPED = {"done", "training_iteration", "epoch", "trial_id", "date", "timestamp", "time_this_iter_s", "time_total_s",
            "time_since_restore", "iterations_since_restore", "timesteps_total", "timesteps_since_restore",
            "episodes_total", "pid", "hostname", "node_ip", "should_checkpoint", "checkpoint_dir_name",
            "experiment_tag", "seconds", "config"}  # fmt: skip
_SUMMARIES = {"": "mean", "_seen": "seen", "_unseen": "unseen"}


def tag_of(key: str) -> str | None:
    """The grouped TensorBoard tag of a reported key; None for bookkeeping."""
    if key in _DROPPED or key.startswith("config/"):
        return None
    for split in ("full_test_", "test_", ""):
        if not key.startswith(split):
            continue
        rest = key[len(split) :]
        group = f"{split}acc"
        if rest == "macro_acc":
            return f"{group}/macro"
        if rest == "acc" or rest.startswith("acc_"):
            suffix = rest[3:]
            return f"{group}/{_SUMMARIES.get(suffix, suffix.lstrip('_'))}"
        if rest in ("eer", "min_dcf"):
            return f"{rest}/{'test' if split else 'val'}"
    if "loss" in key:
        return "loss/" + key.replace("_loss", "").replace("loss_", "").replace("loss", "total")
    return f"train/{key}"  # the learning rate, throughput, sizes


def _devices(tags: list[str], group: str) -> list[str]:
    return [t for t in tags if t.startswith(f"{group}/") and t.split("/", 1)[1] not in ("mean", "macro", *DEVICE_GROUPS)]


def trial_status(trial, epochs: int, failed: bool) -> str:
    """complete / stopped / failed, as the leaderboard says it."""
    if failed or trial.status == "ERROR":
        return "failed"
    return "complete" if trial.last_result.get("training_iteration", 0) >= epochs else "stopped"


class ReadableTensorBoard(TBXLoggerCallback):
    """Grouped tags, a per-device layout, and HParams of `hparams` (name → the space's fixed value; a trial's config
    overrides it) with the trial's true status."""

    def __init__(self, hparams: dict[str, Any], epochs: int):
        super().__init__()
        self.hparams, self.epochs = hparams, epochs
        self._layout_written: set[str] = set()

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        step = result.get("training_iteration", iteration)
        writer = self._trial_writer[trial]
        written = {}
        for key, value in result.items():
            tag = tag_of(key)
            if tag is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            writer.add_scalar(tag, value, global_step=step)
            written[tag] = value
        if trial.trial_id not in self._layout_written and written:
            self._write_layout(writer, sorted(written))
            self._layout_written.add(trial.trial_id)
        self._trial_result[trial] = {**self._trial_result.get(trial, {}), **written}
        writer.flush()

    @staticmethod
    def _write_layout(writer, tags: list[str]) -> None:
        charts = {}
        devices = _devices(tags, "acc")
        if devices:
            # Tags are the same in every trial, so TensorBoard draws this chart for the trials picked in its run list.
            charts["Accuracy per device"] = {
                "validation accuracy, one line per device": ["Multiline", [f"^acc/({'|'.join(d.split('/')[1] for d in devices)})$"]],
                "validation accuracy: mean, seen, unseen devices": ["Multiline", ["^acc/(mean|seen|unseen)$"]],
            }  # fmt: skip
        losses = [t for t in tags if t.startswith("loss/")]
        if losses:
            charts["Loss"] = {"training loss": ["Multiline", ["^loss/"]]}
        if charts:
            writer.add_custom_scalars(charts)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial not in self._trial_writer:
            if not failed:
                return
            self.log_trial_start(trial)  # a trial that failed before its first report still gets its HParams row
        self._write_hparams(trial, failed)
        self._trial_writer[trial].close()
        del self._trial_writer[trial]
        self._trial_result.pop(trial, None)

    def _write_hparams(self, trial, failed: bool) -> None:
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboardX.summary import hparams

        status = trial_status(trial, self.epochs, failed)
        values = {k: trial.config.get(k, fixed) for k, fixed in self.hparams.items()}  # else the space's fixed value
        values = {k: v for k, v in values.items() if isinstance(v, (str, bool, int, float))}
        metrics = dict(self._trial_result.get(trial, {}))
        experiment, start, _ = hparams({**values, "status": status}, metrics)
        end_status = {"complete": "STATUS_SUCCESS", "stopped": "STATUS_UNKNOWN", "failed": "STATUS_FAILURE"}[status]
        content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(end_status)), version=0)
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                          content=content.SerializeToString()))  # fmt: skip
        end = Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=metadata)])
        writer = self._trial_writer[trial].file_writer
        for summary in (experiment, start, end):
            writer.add_summary(summary)
