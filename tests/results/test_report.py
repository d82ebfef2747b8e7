import base64
import html
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from results import report, report_figures
from results.distillation import print_warnings, write_teachers
from results.evaluation import evaluate_student
from results.importance import common_epoch_values, importances, pooled_importance
from results.leaderboard import comparison, write_tables
from results.trial_records import read_experiment
from trainables.asc.data import load_prepared, write_prepared
from trainables.asc.frontend import FrontendConfig
from trainables.asc.logits_file import save_logits
from trainables.asc.student import Student, StudentArch
from trainables.asc.synthetic import CLASSES

DEVICES = ["a", "b", "c", "s1", "s4", "s5"]
PARAMS = ["temperature", "kd_lambda", "lr"]
FIGURES = ["distillation.png", "device_accuracy.png", "hyperparameters.png", "importance.png", "confusion.png",
           "learning_curves.png"]  # fmt: skip


def _trial(search: Path, trial_id: str, subset: int, epochs_done: int, params: dict, epochs: int = 3,
           error: str | None = None, quality: float | None = None, config: dict | None = None) -> None:  # fmt: skip
    """A trial directory as Tune leaves it: params.json, result.json (one line per epoch), maybe error.txt."""
    directory = search / f"student_{trial_id}_subset{subset}"
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps({"subset": subset, "epochs": epochs, **params, **(config or {})}))
    rng = np.random.default_rng(zlib.crc32(trial_id.encode()))  # str hash() varies per process
    if quality is None:
        quality = 0.3 + 0.5 * params["kd_lambda"] + 0.05 * params["temperature"]  # something importance can find
    lines = []
    for epoch in range(1, epochs_done + 1):
        device_acc = {f"acc_{d}": float(np.clip(quality * epoch / epochs - (0.15 if d.startswith("s") else 0)
                                                + rng.normal(0, 0.02), 0, 1)) for d in DEVICES}  # fmt: skip
        metrics = {"trial_id": trial_id, "training_iteration": epoch, "epoch": epoch, "train_loss": 2.0 / epoch,
                   **device_acc, "acc": float(np.mean(list(device_acc.values()))),
                   "acc_seen": device_acc["acc_a"], "acc_unseen": device_acc["acc_s4"], "macro_acc": 0.5}  # fmt: skip
        if epoch == epochs:
            metrics.update({f"test_{k}": v - 0.01 for k, v in metrics.items() if k.startswith(("acc", "macro"))})
        lines.append(json.dumps(metrics))
    (directory / "result.json").write_text("".join(line + "\n" for line in lines))
    if error:
        (directory / "error.txt").write_text(f"Traceback ...\n{error}\n")


def _export(path: Path, subset: int, trial_id: str) -> None:
    """A freshly initialised student in the export format of trainables.asc.student_training.student_export."""
    model = Student(StudentArch())
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(),
                "config": {"arch": StudentArch().as_dict(), "frontend": FrontendConfig().as_dict(),
                           "train": {"subset": subset, "temperature": 2.0, "kd_lambda": 0.3, "lr": 0.005}},
                "metrics": {"acc": 0.6, "test_acc": 0.55, "test_acc_unseen": 0.4},
                "trial_id": trial_id}, path)  # fmt: skip


def make_dataset(directory: Path) -> Path:
    """A prepared dataset small enough to evaluate in about a second: 10 scenes × devices a, b, s4 × 2 noise clips."""
    rng = np.random.default_rng(0)
    rows = [(f"audio/{scene}-city{i}-{i}-{i}-{device}.wav", scene, f"city{i}-{i}", device)
            for scene in CLASSES for device in ("a", "b", "s4") for i in range(2)]  # fmt: skip
    meta = pd.DataFrame(rows, columns=["filename", "scene_label", "identifier", "source_label"])
    clips = (rng.standard_normal((len(meta), 32000)) * 3000).astype(np.int16)
    files = meta["filename"].tolist()
    splits = {"split5": [f for f in files if f.endswith("-a.wav")], "split25": files, "val": files, "test": files}
    write_prepared(directory, meta, clips, splits, 32000, CLASSES, "micro", source="test")
    return directory


def _teacher(path: Path, accuracy: float) -> str:
    """A teacher's logits file as the cache holds it, with its test figures."""
    metrics = {"test_acc": accuracy, "test_acc_seen": accuracy + 0.05, "test_acc_unseen": accuracy - 0.05,
               "test_macro_acc": accuracy - 0.01, **{f"test_acc_{d}": accuracy for d in DEVICES}}  # fmt: skip
    save_logits(path, ["audio/x.wav"], np.zeros((1, 10), dtype=np.float32), metrics)
    return str(path)


def make_run(run_dir: Path) -> Path:
    """A finished run: subset 5 with 4 complete, 1 stopped and 1 failed trial; 25 with 3; 10 with 1 near chance.
    Subsets 5 and 25 have a no-KD reference and a teacher (5's weaker than its no-KD student); subset 5's best
    configuration is confirmed with 2 seeds."""
    run_dir.mkdir(parents=True)
    (run_dir / "space.yaml").write_text(yaml.safe_dump({"metric": "acc", "mode": "max", "search": {
        "subset": [5, 10, 25], "temperature": {"low": 1.0, "high": 5.0}, "kd_lambda": {"low": 0.0, "high": 0.5},
        "lr": {"low": 0.002, "high": 0.02, "log": True}}}))  # fmt: skip
    search = run_dir / "search"
    rng = np.random.default_rng(1)
    write_teachers(run_dir, {5: _teacher(run_dir / "teacher5.pt", 0.2), 25: _teacher(run_dir / "teacher25.pt", 0.9)})
    for subset, complete in ((5, 4), (25, 3), (10, 1)):
        for i in range(complete):
            params = {"temperature": float(rng.uniform(1, 5)), "kd_lambda": float(rng.uniform(0, 0.5)),
                      "lr": float(10 ** rng.uniform(-2.7, -1.7))}  # fmt: skip
            _trial(search, f"t{subset}x{i}", subset, 3, params, quality=0.12 if subset == 10 else None)
    _trial(search, "early", 5, 1, {"temperature": 3.0, "kd_lambda": 0.1, "lr": 0.01})
    _trial(search, "nan", 5, 1, {"temperature": 4.0, "kd_lambda": 0.2, "lr": 0.02},
           error="NonFiniteLoss: training loss became nan in epoch 1, step 0")  # fmt: skip
    board = write_tables(run_dir, "acc", "max")
    for subset in (5, 25):
        best = board[(board["subset"] == subset)].iloc[0]
        params = {"temperature": float(best["temperature"]), "kd_lambda": 1.0, "lr": float(best["lr"])}
        _trial(run_dir / "no_kd", f"ref{subset}", subset, 3, params, quality=0.5)
        if subset == 5:
            for seed in (1, 2):
                _trial(run_dir / "confirm", f"c5s{seed}", 5, 3, {**params, "kd_lambda": float(best["kd_lambda"])},
                       config={"seed": seed})  # fmt: skip
    board = write_tables(run_dir, "acc", "max")
    for subset in (5, 25):
        best = board[(board["subset"] == subset)].iloc[0]["trial_id"]
        _export(run_dir / "best" / f"subset_{subset}" / "student.pt", subset, best)
    return run_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("micro") / "data")


@pytest.fixture(scope="module")
def written(tmp_path_factory, data_dir) -> Path:
    """The report of a fake run, its confusion matrices evaluated on the micro dataset."""
    run_dir = make_run(tmp_path_factory.mktemp("report") / "run")
    return report.write_report(run_dir, data_dir)


def test_report_and_figures_are_written(written):
    assert written == written.parent / "report.html"
    figure_dir = written.parent / "report"
    assert sorted(p.name for p in figure_dir.iterdir()) == sorted(FIGURES)
    page = written.read_text()
    embedded = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert len(embedded) == len(FIGURES)
    # The page embeds exactly the PNG files beside it, and each is a real image.
    assert sorted(base64.b64decode(e) for e in embedded) == sorted((figure_dir / f).read_bytes() for f in FIGURES)
    for name in FIGURES:
        with Image.open(figure_dir / name) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 150


def test_report_reads_offline(written):
    page = written.read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"<link\b", page, re.I)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert "url(" not in page  # nothing fetched from CSS either


def _text(page_path: Path) -> str:
    """The page with its headers' break hints (<wbr>) taken out, as its text reads."""
    return page_path.read_text().replace("<wbr>", "")


def test_report_holds_the_leaderboard_and_best_students(written):
    page = _text(written)
    for trial_id in ("t5x0", "t5x3", "t25x2", "t10x0", "early", "nan"):
        assert f"<td>{trial_id}</td>" in page
    for column in ("rank", "trial_id", "subset", "status", *PARAMS, "acc", "acc_s4", "test_acc"):
        assert f"<th>{column}</th>" in page
    assert "NonFiniteLoss" in page
    assert "<td>61,148</td>" in page and "<td>29,419,156</td>" in page and '<td class="text">within</td>' in page
    assert "subset 10%: 1 complete trial(s)" in page  # importance skipped there, not failed


def _section(page: str, title: str) -> str:
    return page.split(f">{title}</h2>")[1].split("<h2")[0]


def test_report_says_what_distillation_did_and_warns(written):
    page = _text(written)
    titles = re.findall(r"<h2 id=\"[a-z-]+\">([^<]+)</h2>", page)
    assert titles[:5] == ["Warnings", "Best students", "What distillation did", "Teachers", "Leaderboard"]
    warnings = _section(page, "Warnings")
    assert "Subset 10%: the best student&#x27;s test acc" in warnings and "within 5 points of chance (0.100" in warnings
    assert "Subset 5%: the teacher (0.200 test accuracy) is weaker than the student trained without it" in warnings
    assert "Subset 25%" not in warnings
    kd = _section(page, "What distillation did")
    assert re.search(r"<td>KD \(t5x\d, 2 seeds\)</td>", kd) and "<td>no-KD (ref5)</td>" in kd
    spread = r'<td class="spread">0\.\d{3} ±&nbsp;0\.\d{3}</td>'
    assert re.search(spread, kd), "KD mean ± std over the confirmation seeds"
    assert "<td>Δ (points)</td>" in kd and "<th>unseen</th>" in kd
    assert "<th>std</th>" not in kd, "a spread over seeds is no device"
    # The micro dataset's split5 holds device a only, split25 devices a, b and s4: s4 is unseen in 5, seen in 25.
    rows = re.findall(r"<tr>(.*?)</tr>", kd)
    cells = [c for c in (re.findall(r"<td[^>]*>([^<]*)</td>", r) for r in rows) if c]
    header = re.findall(r"<th>([^<]*)</th>", kd)
    s4, a = header.index("s4"), header.index("a")
    assert all(c[s4].endswith(" *") for c in cells if c[0] == "5%") and not any(c[a].endswith("*") for c in cells)
    assert not any(c[s4].endswith("*") for c in cells if c[0] == "25%")
    teachers = _section(page, "Teachers")
    assert "<td>5%</td>" in teachers and "<td>0.900</td>" in teachers and "<td>0.200 *</td>" in teachers
    board = _section(page, "Leaderboard")
    key_table, folded = board.split("<details>")
    assert "<th>acc_unseen</th>" in key_table and "<th>acc_s4</th>" not in key_table
    assert "<th>acc_s4</th>" in folded and "<summary>All " in folded


def test_a_confirmed_configuration_shows_its_seeds_not_its_one_search_run(written):
    """Subset 5's best configuration was confirmed with 2 seeds: its figures are their mean ± std wherever it is
    shown (best students, the leaderboard's key columns), never beside the one search run's (issue 26)."""
    page = _text(written)
    rows = {}
    for section in ("Best students", "Leaderboard"):
        table = _section(page, section).split("<details>")[0]
        header = re.findall(r"<th>([^<]*)</th>", table)
        lines = re.findall(r"<tr[^>]*>(.*?)</tr>", table)[1:]
        rows[section] = [dict(zip(header, re.findall(r"<td[^>]*>([^<]*)</td>", line))) for line in lines]
        assert not [h for h in header if h.startswith("confirmed_")], header
    best = {r["subset"]: r for r in rows["Best students"]}
    for figure in ("acc", "test_acc", "test_acc_unseen"):
        assert re.fullmatch(r"0\.\d{3} ±&nbsp;0\.\d{3}", best["5"][figure]), best["5"]
        assert re.fullmatch(r"0\.\d{3}", best["25"][figure]), best["25"]  # not confirmed: its search run
    assert best["5"]["runs"] == "2 seeds" and best["25"]["runs"] == "1 (search)"
    board = {r["trial_id"]: r for r in rows["Leaderboard"]}
    confirmed = board[best["5"]["trial_id"]]
    assert confirmed["runs"] == "2 seeds" and confirmed["acc"] == best["5"]["acc"]
    assert all(r["runs"] == "1" for t, r in board.items() if t != best["5"]["trial_id"])


def test_importance_per_subset_with_enough_trials(written):
    board = report.read_board(written.parent, "acc", "max")
    found = {r.subset: r for r in importances(board, PARAMS, "acc", "max")}
    assert sorted(found) == [5, 10, 25]
    assert found[5].trials == 4 and found[25].trials == 3  # stopped and failed trials left out
    for subset in (5, 25):
        assert set(found[subset].importances) == set(PARAMS)
        assert abs(sum(found[subset].importances.values()) - 1) < 1e-6
    assert not found[10].importances and "needs at least 3" in found[10].note


def test_subsets_with_too_few_complete_trials_are_pooled_for_importance(tmp_path):
    """As the demo runs: 2 trials a subset, of which ASHA stopped one after 2 of 3 epochs. No subset has 3 complete
    trials, so they are pooled, each trial valued at epoch 2 less its subset's mean (issue 26: "Nothing to draw")."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "space.yaml").write_text(yaml.safe_dump({"metric": "acc", "mode": "max", "search": {
        "subset": [5, 10, 25], "temperature": {"low": 1.0, "high": 5.0}, "kd_lambda": {"low": 0.0, "high": 0.5},
        "lr": {"low": 0.002, "high": 0.02, "log": True}}}))  # fmt: skip
    rng = np.random.default_rng(2)
    for subset in (5, 10, 25):
        for i, done in enumerate((3, 2)):
            params = {"temperature": float(rng.uniform(1, 5)), "kd_lambda": float(rng.uniform(0, 0.5)),
                      "lr": float(10 ** rng.uniform(-2.7, -1.7))}  # fmt: skip
            _trial(run_dir / "search", f"s{subset}x{i}", subset, done, params)
    board = write_tables(run_dir, "acc", "max")
    assert (board.groupby("subset")["status"].apply(sorted) == pd.Series([["complete", "stopped"]] * 3,
                                                                          index=[5, 10, 25])).all()  # fmt: skip
    curves = {t: c for trials in report.search_curves(read_experiment(run_dir / "search")).values()
              for t, c in trials.items()}  # fmt: skip
    at_two = {t: float(c.set_index("training_iteration").loc[2, "acc"]) for t, c in curves.items()}
    assert common_epoch_values(board[board["subset"] == 5], curves, "acc") == {t: at_two[t] for t in ("s5x0", "s5x1")}
    assert all(not r.importances for r in importances(board, PARAMS, "acc", "max"))
    pooled = pooled_importance(board, curves, PARAMS, "acc", "max", [5, 10, 25])
    assert pooled.pooled == (5, 10, 25) and pooled.trials == 6
    assert set(pooled.importances) == set(PARAMS) and abs(sum(pooled.importances.values()) - 1) < 1e-6
    page = report.write_report(run_dir).read_text()
    importance = _section(page, "Hyperparameter importance")
    assert "Nothing to draw yet" not in importance and "pooled" in importance and "<img" in importance
    assert (run_dir / "report" / "importance.png").is_file()


def test_learning_curves_show_every_trial_of_a_subset_with_the_best_highlighted(written):
    curves = report.search_curves(read_experiment(written.parent / "search"))
    assert sorted(curves[5]) == sorted(["t5x0", "t5x1", "t5x2", "t5x3", "early", "nan"])
    figure = report_figures.learning_curves(curves, {5: "t5x1", 10: "t10x0", 25: "t25x0"})
    loss, every, devices = figure.axes[:3]  # subset 5's row
    drawn = {line.get_label(): line for line in every.lines if not line.get_label().startswith("_")}
    assert sorted(drawn) == sorted(["t5x0", "t5x1 (best)", "t5x2", "t5x3", "early", "nan"])
    assert drawn["t5x1 (best)"].get_linewidth() > max(line.get_linewidth() for name, line in drawn.items()
                                                      if name != "t5x1 (best)")  # fmt: skip
    assert len(loss.lines) == 6 and "t5x1" in devices.get_title()


def test_confusion_matrix_counts_every_test_clip(data_dir, tmp_path):
    data = load_prepared(data_dir)
    _export(tmp_path / "s" / "student.pt", 5, "x")
    evaluation = evaluate_student(tmp_path / "s" / "student.pt", data, "test")
    counts = evaluation.confusion
    assert counts.shape == (10, 10) and counts.sum() == len(data.splits["test"]) == 60
    assert (counts.sum(axis=1) == 6).all()  # rows are the true classes
    class_acc = np.diag(counts) / counts.sum(axis=1)
    assert abs(class_acc.mean() - evaluation.metrics["macro_acc"]) < 1e-9
    assert set(evaluation.metrics) >= {"acc", "acc_a", "acc_b", "acc_s4", "acc_seen", "acc_unseen"}
    assert np.isfinite(evaluation.metrics["acc_unseen"])  # subset 5 trained on device a only


def test_confusion_comes_from_the_exported_file_without_data(tmp_path):
    run_dir = make_run(tmp_path / "run")
    path = run_dir / "best" / "subset_5" / "student.pt"
    payload = torch.load(path, weights_only=True)
    counts = np.arange(100).reshape(10, 10)
    torch.save({**payload, "classes": CLASSES, "test_confusion": torch.from_numpy(counts)}, path)
    page = report.write_report(run_dir).read_text()  # no --data
    assert (run_dir / "report" / "confusion.png").is_file()
    assert "subset 25%: its file holds no confusion matrix; pass --data PREPARED_DIR" in page
    assert "subset 5%" not in page.split("Confusion matrices")[1].split("Learning curves")[0]


def test_report_without_data_or_exports_skips_what_it_cannot_draw(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "space.yaml").write_text(yaml.safe_dump({"metric": "acc", "mode": "max",
                                                        "search": {n: {"low": 0.0, "high": 1.0} for n in PARAMS}}))  # fmt: skip
    _trial(run_dir / "search", "only", 5, 3, {"temperature": 2.0, "kd_lambda": 0.1, "lr": 0.005})
    page = report.write_report(run_dir).read_text()  # no leaderboard.csv yet, no best/, no --data
    assert "No exported student" in page
    assert "needs at least 3" in page
    # One complete trial: no importance can be computed, but its figure against each hyperparameter can be drawn.
    assert "Nothing to draw yet" not in page and "Too few comparable trials for any importance" in page
    drawn = ["device_accuracy.png", "hyperparameters.png", "importance.png", "learning_curves.png"]
    assert sorted(p.name for p in (run_dir / "report").iterdir()) == drawn


def test_command_refuses_bad_input(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "space.yaml").write_text("metric: acc\nmode: max\nsearch: {}\n")
    assert report.main([str(tmp_path), "--data", str(tmp_path / "nothing")]) == 2
    assert "--data" in capsys.readouterr().err


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


_LAYOUT_CHECK = """<script>
window.addEventListener("load", () => {
  const folded = [...document.querySelectorAll("details")].map(d => d.open);
  document.querySelectorAll("details").forEach(d => { d.open = true; });  // their tables must fit as well
  const body = document.body.getBoundingClientRect();
  const right = body.right - parseFloat(getComputedStyle(document.body).paddingRight);
  const broken = [];  // [header, word] where a header's word runs over two lines
  for (const th of document.querySelectorAll("th")) {
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const word of node.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (lines.size > 1) broken.push([th.textContent, word[0]]);
      }
    }
  }
  const out = document.createElement("pre");
  out.id = "layout-check";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
    headings: [...document.querySelectorAll("h2")].map(h => [h.textContent, h.getBoundingClientRect().top]),
    tables: [...document.querySelectorAll("table")].map(
      t => [t.rows[0].textContent, t.getBoundingClientRect().right]),
    right: right, page: document.documentElement.clientWidth, scrolled: document.documentElement.scrollWidth,
    broken: broken, folded: folded,
  });
  document.body.appendChild(out);
});
</script>"""

PAGE_WIDTH = 1400  # the page every table must fit (issue 26)


def _layout(browser: str, page: Path, probe: Path) -> dict:
    """The layout Chromium gives `page` at PAGE_WIDTH px, as the check above measures it."""
    probe.write_text(page.read_text().replace("</body>", _LAYOUT_CHECK + "</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={PAGE_WIDTH},3000", "--virtual-time-budget=10000", "--dump-dom",
                           probe.as_uri()], capture_output=True, text=True, timeout=90)  # fmt: skip
    found = re.search(r'<pre id="layout-check">(.*?)</pre>', done.stdout)
    assert found, done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_report_renders_in_headless_chromium(written, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (CI: apt-get install -y chromium)")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={PAGE_WIDTH},3000"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", written.resolve().as_uri()], capture_output=True, timeout=90)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (3000, PAGE_WIDTH)
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)  # one int per colour
    colours = len(np.unique(packed))
    assert colours > 200, f"the page looks blank ({colours} distinct colours)"
    checked = _layout(browser, written, tmp_path / "probe.html")
    images = checked["images"]
    assert len(images) == len(FIGURES)
    assert all(complete and width > 0 and height > 0 for complete, width, height in images), images
    headings = [title for title, _ in checked["headings"]]
    assert headings[:5] == ["Warnings", "Best students", "What distillation did", "Teachers", "Leaderboard"]
    assert [top for _, top in checked["headings"]] == sorted(top for _, top in checked["headings"])
    assert checked["folded"] == [False], "the leaderboard's other columns are folded"
    # Every table, the folded ones opened, fits the page, and no column name breaks inside a word (issue 26: the
    # best students overflowed, and "temperature" broke into "temper ature").
    assert len(checked["tables"]) >= 6
    assert [t for t in checked["tables"] if t[1] > checked["right"] + 0.5] == [], checked["right"]
    assert checked["scrolled"] <= checked["page"]
    assert checked["broken"] == []
    # The screenshot shows the warning box (its orange border) above the fold.
    orange = (np.abs(pixels[:1500].astype(int) - [0xE6, 0x7E, 0x00]).sum(axis=2) < 30).sum()
    assert orange > 50, "no warning box in the first screen"


def test_the_layout_check_finds_a_header_broken_inside_a_word(tmp_path):
    """The check above on a page made to fail it: a column too narrow for "temperature", allowed to break it."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary (CI: apt-get install -y chromium)")
    page = tmp_path / "narrow.html"
    page.write_text("<!DOCTYPE html><html><head><style>th { width: 30px; overflow-wrap: anywhere; }</style></head>"
                    f"<body><table><tr><th>temperature</th><th>{report.header('kd_lambda')}</th></tr></table>"
                    f"<table style=\"width: {2 * PAGE_WIDTH}px\"><tr><th>wide</th></tr></table></body></html>")
    checked = _layout(browser, page, tmp_path / "probe.html")
    assert ["temperature", "temperature"] in checked["broken"] and ["kd_lambda", "lambda"] in checked["broken"]
    assert checked["tables"][1][1] > checked["right"] and checked["scrolled"] > checked["page"]


def test_distributions_come_from_the_space_widened_to_what_ran():
    """One conversion to Optuna's distributions (the space's), for the search and for the study rebuilt from a
    run's record; the record's search section read as the space reads it."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from results.importance import distribution
    from results.run_record import dimensions

    record = {"search": {"subset": [5], "lr": {"low": 0.002, "high": 0.02, "log": True},
                         "freqm": {"low": 16, "high": 64, "log": False}, "base_channels": [24, 32]}}  # fmt: skip
    found = dimensions(record)
    assert list(found) == ["lr", "freqm", "base_channels"]
    assert found["lr"].distribution() == FloatDistribution(0.002, 0.02, log=True)
    assert distribution("lr", [0.003, 0.03], found["lr"]) == FloatDistribution(0.002, 0.03, log=True)
    assert distribution("freqm", [24, 48], found["freqm"]) == IntDistribution(16, 64)
    assert distribution("base_channels", [32], found["base_channels"]) == CategoricalDistribution([24, 32])
    assert distribution("temperature", [1.5, 3.0]) == FloatDistribution(1.5, 3.0)  # no bounds recorded
    assert dimensions({"kind": "replication", "seed": 3, "seeds": 2, "search": {}})["seed"].choices == (3, 4)


def _test_figure(trial_dir: Path, name: str) -> float:
    return json.loads((trial_dir / "result.json").read_text().splitlines()[-1])[name]


def test_seed_spread_teachers_csv_and_console_warnings(tmp_path, capsys):
    run_dir = make_run(tmp_path / "run")
    (first,) = (run_dir / "no_kd").glob("student_ref5_*")
    _trial(run_dir / "no_kd", "ref5b", 5, 3, json.loads((first / "params.json").read_text()), quality=0.7)
    compared = comparison(run_dir, "acc", "max").set_index(["subset", "student"])
    kd, no_kd = compared.loc[(5, "kd")], compared.loc[(5, "no_kd")]
    assert kd["runs"] == 2 and no_kd["runs"] == 2 and not np.isnan(kd["test_acc_std"])
    refs = [_test_figure(d, "test_acc_unseen") for d in sorted((run_dir / "no_kd").glob("student_ref5*"))]
    assert no_kd["test_acc_unseen"] == pytest.approx(np.mean(refs))
    assert no_kd["test_acc_unseen_std"] == pytest.approx(np.std(refs, ddof=1))
    assert compared.loc[(25, "no_kd")]["runs"] == 1 and np.isnan(compared.loc[(25, "no_kd")]["test_acc_std"])

    table = pd.read_csv(run_dir / "teachers.csv")  # written with the teachers, before any student trained
    assert list(table.columns) == ["subset", "test_acc", "test_macro_acc", "test_acc_unseen",
                                   *[f"test_acc_{d}" for d in DEVICES], "test_acc_seen", "logits"]  # fmt: skip
    assert table["subset"].tolist() == [5, 25] and table["test_acc"].tolist() == pytest.approx([0.2, 0.9])
    assert table["test_acc_unseen"].tolist() == pytest.approx([0.15, 0.85])

    print_warnings(run_dir, "acc", "max", n_classes=10)
    out = capsys.readouterr().out
    assert "Warning: Subset 10%: the best student's test acc" in out and "within 5 points of chance" in out
    assert "Warning: Subset 5%: the teacher (0.200 test accuracy) is weaker than the student trained without it" in out
    assert "Subset 25%" not in out
    # Confirmed with seeds that learned, subset 10's best is judged by their mean, not by its one search run.
    (source,) = (run_dir / "search").glob("*_t10x0_*/params.json")  # its configuration, with other seeds
    searched = {k: v for k, v in json.loads(source.read_text()).items() if k in PARAMS}
    for seed in (1, 2):
        _trial(run_dir / "confirm", f"c10s{seed}", 10, 3, searched, quality=0.6, config={"seed": seed})
    print_warnings(run_dir, "acc", "max", n_classes=10)
    assert "Subset 10%" not in capsys.readouterr().out
