"""Opening hours and the archive, as plain logic."""

import datetime as dt
import json

import pytest

from permanent.care.archive import PassArchive, pass_record, recent
from permanent.config import Config
from permanent.errors import ConfigError
from permanent.events import TokenEvent
from permanent.care.hours import DAYS, is_open
from permanent.schema import load_yaml

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
# 2026-11-27 is a Friday.
AT = lambda day, hh, mm: dt.datetime(2026, 11, 27 + day, hh, mm)


@pytest.mark.parametrize("when, expected", [
    (AT(0, 9, 59), False), (AT(0, 10, 0), True), (AT(0, 17, 59), True), (AT(0, 18, 0), False),
    (AT(1, 12, 0), False),   # Saturday: closed
])
def test_day_hours(when, expected):
    assert is_open(when, WEEKDAYS, "10:00", "18:00") is expected


@pytest.mark.parametrize("when, expected", [
    (AT(0, 21, 59), False), (AT(0, 22, 0), True), (AT(1, 1, 30), True),   # Friday night
    (AT(1, 2, 0), False), (AT(1, 23, 0), False), (AT(2, 1, 0), False),    # no Saturday night
])
def test_night_hours_run_past_midnight(when, expected):
    assert is_open(when, WEEKDAYS, "22:00", "02:00") is expected


def test_bad_hours_name_the_key_and_line():
    with pytest.raises(ConfigError, match=r"line 3: hours.closes: '25:00' is not a time"):
        load_yaml(Config, "hours:\n  opens: '10:00'\n  closes: '25:00'\n", "config.yaml")
    with pytest.raises(ConfigError, match=r"line 2: hours.days: 'monday' is not a day"):
        load_yaml(Config, "hours:\n  days: [monday]\n", "config.yaml")


def tokens(text):
    return [TokenEvent(0, i, w, 1.5, False) for i, w in enumerate(text)]


def test_archive_rotates_at_its_size_and_reads_back_in_order(tmp_path):
    path = tmp_path / "passes.jsonl"
    archive = PassArchive(path, max_bytes=2000, backups=3)
    for n in range(40):
        archive.append(pass_record(n, "m", "prompt", tokens([f"pass {n} ", "words " * 10])))
    archive.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 4 and all(f.stat().st_size <= 2000 for f in files)  # bounded
    kept = recent(path, 0)
    assert [r["pass"] for r in kept] == list(range(40 - len(kept), 40))
    assert [r["pass"] for r in recent(path, 3)] == [37, 38, 39]
    assert kept[-1]["entropy_bits"] == [1.5, 1.5] and kept[-1]["text"].startswith("pass 39")


def test_an_unwritable_archive_is_reported_once(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    archive = PassArchive(blocker / "passes.jsonl", 10_000, 2)   # its parent is a file
    archive.append(pass_record(0, "m", "p", tokens(["a"])))
    full = PassArchive("/dev/full", 10_000, 2)                   # a disk that is full
    for n in range(3):
        full.append(pass_record(n, "m", "p", tokens(["a"])))
    warnings = [r.getMessage() for r in caplog.records if "archive" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "cannot create the archive" in warnings[0] and "cannot write" in warnings[1]


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "passes.jsonl"
    path.write_text(json.dumps({"pass": 1, "text": "x"}) + "\n" + '{"pass": 2, "te')
    assert [r["pass"] for r in recent(path, 5)] == [1]


def test_opening_hours_say_only_when_they_change():
    from permanent.care.hours import OpeningHours

    wall = [dt.datetime(2026, 11, 30, 9, 59, 0)]   # a Monday, a minute before opening
    hours = OpeningHours(lambda: wall[0])
    week = list(DAYS)
    assert hours.change(0.0, True, week, "10:00", "18:00") is False   # closed: said once
    assert hours.change(2.0, True, week, "10:00", "18:00") is None
    wall[0] = dt.datetime(2026, 11, 30, 10, 0, 0)
    assert hours.change(2.5, True, week, "10:00", "18:00") is None    # looked at once a second
    assert hours.change(3.0, True, week, "10:00", "18:00") is True and hours.open
    assert hours.change(9.0, False, week, "10:00", "18:00") is None   # hours off: open anyway
