"""How big and how costly a student is, and whether it fits the DCASE 2024 Task 1 budget.

    python results/complexity.py STUDENT.pt      # prints parameters, memory, MACs and the verdict

Figures, counted the way the challenge counts them:
- parameters: every parameter of the network (batch-norm weights and biases included; the front
  end has none);
- parameter memory: parameters × bytes per value, in bytes, at fp16 (2 bytes) and int8 (1 byte);
- MACs: multiply-accumulates of one forward pass over the log-mel of one 1-s clip, with the front
  end excluded (trainables.asc.student.count_macs on an input of shape (1, 1, n_mels, frames)).
The figures and the budget themselves are defined once, in trainables/asc/student.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results.student_file import load_student  # noqa: E402
from trainables.asc.frontend import FrontendConfig  # noqa: E402
from trainables.asc.student import DCASE24_BUDGET, Budget, Complexity, complexity  # noqa: E402
from trainables.tensor_files import UnreadableFile  # noqa: E402


def frames_of(frontend: FrontendConfig, seconds: float = 1.0) -> int:
    """Spectrogram frames of a clip: a centred STFT gives one frame per hop plus one."""
    return int(round(seconds * frontend.sample_rate)) // frontend.hop_length + 1


def student_complexity(path: Path) -> Complexity:
    """The complexity of an exported student file (best/subset_<N>/student.pt) for one 1-s clip."""
    frontend, model, _ = load_student(Path(path))
    return complexity(model.arch, (frontend.config.n_mels, frames_of(frontend.config)))


def describe(found: Complexity, budget: Budget = DCASE24_BUDGET) -> str:
    """A few lines a person reads: the figures and the verdict against `budget`."""
    reasons = budget.violations(found)
    return "\n".join([
        f"parameters        {found.params:,}",
        f"memory fp16       {found.param_bytes(16):,} bytes",
        f"memory int8       {found.param_bytes(8):,} bytes",
        f"MACs              {found.macs:,}  (one 1-s clip, front end excluded)",
        "DCASE24 budget    " + ("within" if not reasons else "OVER: " + "; ".join(reasons)),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="results/complexity.py", description=__doc__.splitlines()[0])
    parser.add_argument("student", help="an exported student file, e.g. runs/kd/best/subset_25/student.pt")
    args = parser.parse_args(argv)
    if not Path(args.student).is_file():
        print(f"error: no such file: {args.student}", file=sys.stderr)
        return 2
    try:
        found = student_complexity(Path(args.student))
    except UnreadableFile as error:  # a damaged or hostile file: refused, nothing in it runs
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(describe(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
