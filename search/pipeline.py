"""A run, once its checks passed (search/preflight.py): teachers → per-subset student search → confirmation →
no-KD references → results.

Run directory (`<storage>/<name>/`):
    space.yaml          the run's record: its settings as a space file, and its dataset (results/run_record.py)
    teachers/           the Tune experiment that trained this run's teachers (absent on a cache hit)
    search/             the Tune experiment of every student trial, all subsets
    confirm/            each subset's best configuration again with new seeds (confirm_top_k)
    no_kd/              each subset's best configuration retrained with kd_lambda = 1
    leaderboard.csv, comparison.csv, teachers.csv, best/subset_<N>/student.pt   (written by results/)
Shared caches (`<storage>/cache/`): prepared datasets and teacher logits, reused across runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from results.distillation import print_warnings
from results.export import export_best, export_lines
from results.leaderboard import build_leaderboard, print_comparison, print_leaderboard, print_summary, write_tables
from results.replication import replication_lines, write_replication
from results.report import write_report
from results.run_record import RECORD, write_record
from results.trial_records import damage_lines
from search.cluster import cluster
from search.console import banner, quiet_ray
from search.planning import plan_line, time_steps
from search.request import RunRequest
from search.signals import terminate_as_interrupt
from search.teacher_checks import WeakTeacher
from search.tuning import run_confirmation, run_references, search_trials
from spaces.space import to_mapping
from trainables.asc.data import load_prepared


class RunFailed(RuntimeError):
    """The search ran but no trial completed; the leaderboard and report say what happened to each."""


def run(request: RunRequest) -> None:
    """Everything after the checks; starts (or joins) Ray. `request.data` is the prepared dataset."""
    space, system = request.space, request.space.spec
    request.run_dir.mkdir(parents=True, exist_ok=True)
    print(f"Run directory: {request.run_dir}")
    print(f"Watch it with: tensorboard --logdir {shlex.quote(str(request.run_dir))}", flush=True)
    timing = time_steps(space, request.data)  # before Ray starts, so that nothing else competes for the cores
    quiet_ray(request.verbose)
    # Ray's start installs its own SIGTERM handler: the run's own one goes on after it.
    with cluster(request) as request, terminate_as_interrupt():
        # The space as given (automatic resources stay automatic), so a resume elsewhere decides them again.
        write_record(request.run_dir, to_mapping(space), request.data, request.storage)  # the run has truly started
        space = request.space
        print(plan_line(space, request.data, timing, request.trials_at_once), flush=True)
        try:
            context = system.context(request)
        except WeakTeacher:
            # Refused before any student trained: the corrected command (allowing the teacher, or a better one) must
            # start the same name afresh, not be told the run exists. Its teachers stay cached.
            if not request.resume:
                (request.run_dir / RECORD).unlink(missing_ok=True)
            raise
        if space.kind == "replication":
            banner(f"Replication: the fixed settings with {space.seeds} seeds per subset, nothing selected")
        else:
            banner(f"Search: {space.samples} trials" + (" per subset" if system.by_subset else ""))
        search_trials(request, context)
        if space.confirm_top_k:
            banner(f"Confirmation: the top {space.confirm_top_k} of each subset with {space.confirm_seeds} new seeds")
            run_confirmation(request, context, build_leaderboard(request.run_dir, space.metric, space.mode))
        board = build_leaderboard(request.run_dir, space.metric, space.mode)
        if system.references and space.compare_without_kd and not board.empty:
            banner("References: each subset's best configuration without distillation (kd_lambda = 1)")
            run_references(request, context, board)
        banner("Results")
        board = write_tables(request.run_dir, space.metric, space.mode)
        print_leaderboard(board, space.metric, [d.name for d in space.dimensions])
        for line in damage_lines(request.run_dir):
            print(line)
        print_comparison(request.run_dir, space.metric, space.mode)
        replicated = write_replication(request.run_dir)
        for line in replication_lines(request.run_dir, replicated):
            print(line)
        if system.scene_report and replicated.empty:
            print_summary(board)
            print_warnings(request.run_dir, space.metric, space.mode, len(load_prepared(request.data).classes))
        for line in export_lines(export_best(request.run_dir, space.metric, space.mode), request.run_dir):
            print(line)
        if system.scene_report:
            print(f"Report: {write_report(request.run_dir, request.data)}")
        check_completed(board, request.run_dir)


def check_completed(board: pd.DataFrame, run_dir: Path) -> None:
    """Raise RunFailed, in one line, when no trial ran all its epochs."""
    if not board.empty and (board["status"] == "complete").any():
        return
    counts = ", ".join(f"{n} {status}" for status, n in board["status"].value_counts().items()) or "none"
    errors = [e for e in board.get("error", []) if isinstance(e, str) and e.strip()]
    reason = f"; the first error: {errors[0].strip().splitlines()[-1][:150]}" if errors else ""
    raise RunFailed(f"no trial completed (trials: {counts}){reason}; see {run_dir / 'leaderboard.csv'}")
