"""An exported student's logits for every clip of a dataset, so that a trained CNN can serve as a teacher
(NTU's ensembles average PaSST and baseline-CNN teachers).

    python results/student_logits.py RUN/best/subset_5/student.pt --data DIR --out cnn_5.pt [--storage runs]

DIR is a prepared dataset, or a TAU22 root (read once into <storage>/cache/datasets, as search/run.py does).
The file is the seed systems' format: float32 [rows of meta.csv, classes] in meta.csv order, which
`teacher.logits` of a KD search takes, alone or in a list whose logits are averaged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.student_file import load_student  # noqa: E402
from trainables.asc.data import AscData, is_prepared, load_prepared  # noqa: E402
from trainables.asc.evaluation import logits_metrics, predict  # noqa: E402
from trainables.asc.logits_file import write_seed_logits  # noqa: E402
from trainables.common import resolve_device  # noqa: E402
from trainables.prepared import DatasetError  # noqa: E402
from trainables.tensor_files import UnreadableFile, load_tensors  # noqa: E402


def student_logits(path: Path, data: AscData, device: torch.device | None = None, batch_size: int = 256) -> np.ndarray:
    """fp32 logits [clips, classes] of the exported student at `path` for every clip of `data`, in row order."""
    device = resolve_device(device)
    frontend, model, _ = load_student(path)
    frontend, model = frontend.to(device), model.to(device)
    if frontend.config.sample_rate != data.sample_rate:
        raise DatasetError(f"{path} expects {frontend.config.sample_rate} Hz audio; the dataset is at {data.sample_rate} Hz")
    rows = np.arange(len(data.filenames))
    return predict(lambda waveform: model(frontend(waveform)), data, rows, batch_size, device).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/student_logits.py", description=__doc__.splitlines()[0])
    parser.add_argument("student", help="an exported student.pt")
    parser.add_argument("--data", required=True, help="a prepared dataset or a TAU22 root")
    parser.add_argument("--out", required=True, help="the logits file to write")
    parser.add_argument("--storage", default="runs", help="where a TAU22 root is prepared (default: ./runs)")
    args = parser.parse_args(argv)
    from trainables.asc.tau22 import is_tau22_root, prepare_tau22

    try:
        directory = Path(args.data)
        if not is_prepared(directory):
            if not is_tau22_root(directory):
                raise DatasetError(f"--data {directory}: neither a prepared dataset nor a TAU22 root with meta.csv")
            directory = prepare_tau22(directory, Path(args.storage).resolve() / "cache" / "datasets")
        data = load_prepared(directory)
        if not Path(args.student).is_file():
            raise DatasetError(f"{args.student}: no such student file")
        logits = student_logits(Path(args.student), data)
    except (DatasetError, UnreadableFile) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_seed_logits(Path(args.out), logits)
    subset = int(load_tensors(Path(args.student))["config"]["train"]["subset"])
    found = logits_metrics(logits, data, subset) if f"split{subset}" in data.splits else {}
    figures = ", ".join(f"{k}={found[k]:.3f}" for k in ("test_macro_acc", "full_test_macro_acc") if k in found)
    print(f"Wrote {args.out}: [{logits.shape[0]}, {logits.shape[1]}] logits in meta.csv order; {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
