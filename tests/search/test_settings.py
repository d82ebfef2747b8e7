"""Settings types: every field carries its rule, each kind of rule holds, the teacher cache key comes from the fields,
and path settings are found, made absolute and checked by their kind."""

import dataclasses
import importlib
import math
import pkgutil
from pathlib import Path

import pytest

import spaces.space
import trainables
from search.systems import build_space
from search.teachers import _init_part, _key
from spaces.errors import SpaceError
from spaces.space_file import read_space_file
from trainables.asc.student import StudentArch
from trainables.asc.student_training import StudentConfig
from trainables.asc.teacher import TeacherConfig
from trainables.settings import (
    FINITE, FLAG, Rule, SettingError, Settings, cache_key_fields, flag, nested, path_fields, path_setting, setting,
)  # fmt: skip
from trainables.speaker.student_training import OskdftConfig
from trainables.speaker.teacher import SslConfig
from trainables.speaker.teacher_training import TeacherTrainConfig

# The hand-kept list the teacher cache key was made from before the fields said it themselves (search/teachers.py
# _INIT_KEYS); cached teachers stay valid only while the key holds exactly these.
OLD_INIT_KEYS = {
    "arch", "weights", "embed_dim", "depth", "num_heads", "drop_path_rate", "width", "s_patchout_t", "s_patchout_f",
    "freqm", "timem", "batch_size", "lr", "head_lr", "weight_decay", "schedule", "warmup_fraction", "warmup_epochs",
    "rampdown_start", "rampdown_epochs", "lr_floor", "mixstyle_p", "mixstyle_alpha", "roll_sec", "dir_path",
    "dir_prob", "sample_rate", "precision", "seed",
}  # fmt: skip


def _settings_classes() -> set[type]:
    for module in pkgutil.walk_packages(trainables.__path__, "trainables."):
        importlib.import_module(module.name)
    found, todo = set(), [Settings]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith(("trainables.", "search.", "spaces.")) and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def _unruled(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("rule") is None]


def _undecided(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("cache_key") is None]


def test_every_field_of_every_settings_type_has_its_rule():
    classes = _settings_classes()
    names = {c.__name__ for c in classes}
    assert {"StudentConfig", "StudentArch", "Budget", "FrontendConfig", "TeacherConfig", "SyntheticConfig",
            "PretrainingConfig", "OskdftConfig", "SslConfig", "TftConfig", "TeacherTrainConfig",
            "SyntheticSpeakerConfig", "SchedulerSettings", "ResourceSettings"} <= names, names  # fmt: skip
    assert {c for c in classes if c.__module__ == "spaces.space"} == {spaces.space.SchedulerSettings,
                                                                     spaces.space.ResourceSettings}
    for cls in classes:
        assert _unruled(cls) == [], f"{cls.__name__}: fields without a rule"
        cls()  # every default keeps its own rule

    @dataclasses.dataclass(frozen=True)
    class Forgotten(Settings):
        ruled: int = setting(1, low=0)
        bare: int = 3

    assert _unruled(Forgotten) == ["bare"], "the walk above finds a field declared without a rule"


def test_every_field_of_the_space_has_its_rule_and_a_space_breaking_one_is_not_made():
    assert _unruled(spaces.space.Space) == []
    space = build_space(read_space_file("kd"))
    for change, needle in [({"subsets": (5, 7)}, "subsets: must be a list"), ({"sections": {"teacher": {}}}, "sections"),
                           ({"arms": {"": {}}}, "arms: must be a mapping"), ({"settings": {"lr": 1}}, "settings"),
                           ({"system": ""}, "system: must be a non-empty string")]:  # fmt: skip
        with pytest.raises(SettingError, match=needle):
            dataclasses.replace(space, **change)
    mapping = Rule(kind="mapping", item=Rule(low=0))
    assert mapping.allows({"a": 1}) and not mapping.allows({"a": -1}) and not mapping.allows({1: 1})


def test_the_teacher_cache_key_is_declared_on_every_teacher_field_and_keeps_its_hash():
    assert _undecided(TeacherConfig) == [], "every teacher setting says whether it changes a cached teacher"
    assert set(cache_key_fields(TeacherConfig())) == OLD_INIT_KEYS
    # Literal keys of the hand-kept list, so teachers cached before the flags are found again.
    assert _key(_init_part(TeacherConfig())) == "cbc5dd7614852d87e410"
    changed = TeacherConfig(arch="cnn", width=32, lr=3e-4, head_lr=1e-3, dir_path="/x/dirs", seed=11, precision="bf16")
    assert _key(_init_part(changed)) == "696f012fdccd8b1619fc"
    assert _key(_init_part(dataclasses.replace(changed, ensemble=3, allow_weak=True))) == "696f012fdccd8b1619fc"

    @dataclasses.dataclass(frozen=True)
    class Grown(TeacherConfig):
        new_knob: float = setting(0.5, low=0.0)  # cache_key left undecided

    assert _undecided(Grown) == ["new_knob"], "a teacher setting added without deciding its cache_key is caught"


def test_numbers_keep_to_their_range_and_are_finite_real_numbers():
    rule = Rule(low=0.0, high=1.0, high_open=True)
    assert rule.allows(0.0) and rule.allows(0.5) and not rule.allows(1.0) and not rule.allows(-0.1)
    assert rule.describe() == "must lie in [0.0, 1.0)"
    for bad in (math.nan, math.inf, True, "0.5"):
        assert not rule.allows(bad), bad
    assert FINITE.allows(-35.0) and not FINITE.allows(-math.inf) and FINITE.describe() == "must be a finite number"
    with pytest.raises(SettingError, match=r"^noise_floor_db: must be a finite number, got inf$"):
        FINITE.check("noise_floor_db", math.inf)
    FINITE.check("f_max", None)  # None passes: the settings that may be None say so in their type


def test_a_bool_rule_takes_only_true_or_false():
    assert FLAG.allows(True) and FLAG.allows(False) and not FLAG.allows(1) and not FLAG.allows("yes")
    with pytest.raises(SettingError, match=r"^compile: must be true or false, got 'yes'$"):
        StudentConfig(compile="yes")


def test_a_text_rule_takes_a_non_empty_string_matching_its_pattern():
    words = Rule(kind="text")
    assert words.allows("x") and not words.allows("") and not words.allows(3)
    assert words.describe() == "must be a non-empty string"
    assert Rule(kind="text", pattern="[a-z]+").describe() == "must match [a-z]+"
    with pytest.raises(SettingError, match=r"^n_blocks: must be three block counts 1–9 such as 3,2,1, got '3,0,1'$"):
        StudentConfig(n_blocks="3,0,1")
    long = "3," * 100
    with pytest.raises(SettingError) as err:
        StudentConfig(n_blocks=long)
    assert len(str(err.value)) < 160, "a long value is cut short in the one-line message"


def test_an_items_rule_checks_the_length_and_every_item():
    rule = StudentArch.__dataclass_fields__["n_blocks"].metadata["rule"]
    assert rule.allows((3, 2, 1)) and not rule.allows((3, 2)) and not rule.allows((3, 0, 1)) and not rule.allows([3, 2, 1])
    assert rule.describe() == "must be a list of 3 items; each must lie in [1, 9]"
    with pytest.raises(SettingError, match=r"^domains: must be a list of 1–2 items; each must be one of target, ood"):
        TeacherTrainConfig(domains=("ood", "books"))
    with pytest.raises(SettingError, match="domains"):
        TeacherTrainConfig(domains=())
    assert TeacherTrainConfig.from_dict({"domains": ["ood", "target"]}).domains == ("ood", "target")  # a YAML list


def test_a_path_rule_takes_a_path_and_finds_what_is_missing(tmp_path):
    file_rule = Rule(kind="path", path="file", must_exist=True)
    assert file_rule.allows("a/b.pt") and not file_rule.allows("") and not file_rule.allows(3)
    assert file_rule.describe() == "must be the path of a file"
    (tmp_path / "w.pt").write_bytes(b"")
    assert file_rule.missing_at(str(tmp_path / "w.pt")) is None
    assert file_rule.missing_at(str(tmp_path / "x.pt")) == f"nothing at {tmp_path / 'x.pt'}"
    assert file_rule.missing_at(str(tmp_path)) == f"{tmp_path} is a folder, not a file"
    assert Rule(kind="path", path="dir", must_exist=True).missing_at(str(tmp_path / "w.pt")) == (
        f"{tmp_path / 'w.pt'} is a file, not a folder")
    holds = Rule(kind="path", path="dir", must_exist=True, holds=("*.wav", ".wav impulse responses"))
    assert holds.missing_at(str(tmp_path)) == f"no .wav impulse responses in {tmp_path}"
    (tmp_path / "ir.wav").write_bytes(b"")
    assert holds.missing_at(str(tmp_path)) is None
    assert Rule(kind="path", path="file").missing_at(str(tmp_path / "x.pt")) is None, "need not exist"
    with pytest.raises(ValueError, match="file or a dir"):
        Rule(kind="path", path="socket")

    @dataclasses.dataclass(frozen=True)
    class Paths(Settings):
        one: str | None = path_setting("file")
        many: tuple[str, ...] = path_setting("file", many=True)
        other: bool = flag(False)

    assert [name for name, _ in path_fields(Paths())] == ["one", "many"]
    with pytest.raises(SettingError, match=r"^many: must be a list of items; each must be the path of a file"):
        Paths(many=("",))


def test_a_settings_rule_holds_nested_settings_built_from_a_mapping():
    @dataclasses.dataclass(frozen=True)
    class Outer(Settings):
        inner: SslConfig = nested(SslConfig)  # noqa: RUF009 (a field: each instance gets its own default)

    assert Outer().inner == SslConfig()
    assert Outer.from_dict({"inner": {"family": "wavlm"}}).inner.family == "wavlm"
    with pytest.raises(SettingError, match=r"^inner: must be SslConfig settings"):
        Outer(inner={"family": "wavlm"})
    with pytest.raises(SettingError, match=r"^family: must be one of"):
        OskdftConfig.from_dict({"teacher": {"family": "whisper"}})


def test_a_predicate_narrows_a_rule_and_says_so():
    rule = Rule(low=0, predicate=lambda n: n != 1, means="must be 0 or at least 2")
    assert rule.allows(0) and rule.allows(2) and not rule.allows(1) and not rule.allows(-1)
    from trainables.speaker.synthetic import SyntheticSpeakerConfig

    with pytest.raises(SettingError, match=r"^val_speakers: must be 0 \(no validation trials\) or at least 2, got 1$"):
        SyntheticSpeakerConfig(val_speakers=1)


def test_from_dict_is_one_classmethod_refusing_unknown_keys():
    for cls in _settings_classes():
        assert cls.from_dict.__func__ is Settings.from_dict.__func__, f"{cls.__name__} keeps its own from_dict"
    with pytest.raises(SettingError, match=r"^lrr: StudentConfig has no such setting \(did you mean 'lr'\?\)$"):
        StudentConfig.from_dict({"lrr": 0.1})
    assert StudentArch.from_dict({"n_blocks": [2, 2, 2]}).n_blocks == (2, 2, 2)


def test_path_settings_are_made_absolute_and_checked_by_their_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "irs").mkdir()
    raw = read_space_file("kd")
    raw["dir_path"] = "irs"
    with pytest.raises(SpaceError, match=rf"^dir_path: no \.wav impulse responses in {tmp_path}/irs$"):
        build_space(raw)
    (tmp_path / "irs" / "a.wav").write_bytes(b"")
    raw["teacher"]["logits"] = ["logits/{subset}.npz"]  # a template, looked for by subset later
    space = build_space(raw)
    assert space.settings.dir_path == str(tmp_path / "irs")
    assert space.teacher.logits == (str(tmp_path / "logits" / "{subset}.npz"),)
    raw["teacher"]["weights"] = "passt.pt"
    with pytest.raises(SpaceError, match=rf"^teacher\.weights: nothing at {tmp_path}/passt\.pt$"):
        build_space(raw)
    raw["teacher"]["weights"] = None
    raw["teacher"]["cochlscene"] = str(tmp_path / "irs" / "a.wav")
    with pytest.raises(SpaceError, match=r"^teacher\.cochlscene: .*a\.wav is a file, not a folder$"):
        build_space(raw)


def test_every_section_s_paths_are_checked():
    raw = read_space_file("oskdft2")
    raw.setdefault("teacher_training", {})["weights"] = "/no/such/hubert.pt"
    with pytest.raises(SpaceError, match=r"^teacher_training\.weights: no teacher weights at /no/such/hubert\.pt$"):
        build_space(raw)
    assert Path("/no/such/hubert.pt") == Path(TeacherTrainConfig(weights="/no/such/hubert.pt").weights), (
        "made elsewhere (a trial from its record), a path is not looked for")
