"""Faults of a real room that care must survive: a disk that fills (a real tmpfs), a wall
clock that jumps (NTP, daylight saving), and a model killed for want of memory (a real
memory cgroup). The whole piece on a disk that fills is in test_care, beside the archive's
other tests. The tests of a running piece print how long it took to recover."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys

import pytest

from conftest import every_line_parses, fill, small_disk

PAGE = os.sysconf("SC_PAGE_SIZE")


# The disk fills.

def test_an_archive_on_a_disk_that_fills_keeps_only_whole_lines(tmp_path, caplog):
    """A disk with one page left: the line that does not fit is not left half-written,
    when there is room again it is said once, and a piece stopped while the disk was
    full leaves nothing torn for the next start to write after."""
    from permanent.care.archive import PassArchive, pass_record
    from permanent.events import TokenEvent

    caplog.set_level(logging.INFO)
    words = [TokenEvent(0, i, "word ", 1.5, False) for i in range(60)]   # ~700 bytes a pass
    with small_disk(tmp_path / "disk", 1) as disk:
        path = disk / "passes.jsonl"
        passes_in = lambda: [record["pass"] for record in every_line_parses(path)]
        filler = fill(disk, leave=PAGE)
        archive = PassArchive(path, max_bytes=10**6, backups=3)
        for n in range(12):
            archive.append(pass_record(n, "m", "p", words))
        written = passes_in()   # as `permanent archive` would read it now
        assert 0 < len(written) < 12 and written == list(range(len(written)))
        filler.unlink()
        archive.append(pass_record(12, "m", "p", words))   # room again: kept at once
        assert passes_in() == written + [12]

        filler = fill(disk, leave=PAGE)
        for n in range(13, 25):
            archive.append(pass_record(n, "m", "p", words))
        more = passes_in()[len(written) + 1:]
        archive.close()                       # the piece stops with the disk still full
        filler.unlink()
        after = PassArchive(path, max_bytes=10**6, backups=3)   # ... and starts again
        after.append(pass_record(25, "m", "p", words))
        after.close()
        kept = passes_in()
    assert more and kept == written + [12] + more + [25], kept
    messages = [r.getMessage() for r in caplog.records if "archive" in r.getMessage()]
    assert [m.split(" at ")[0] for m in messages] == [
        "cannot write to the archive", "writing to the archive", "cannot write to the archive"]
    assert "No space left on device" in messages[0] and "without archiving" in messages[0]


def test_the_log_file_on_a_disk_that_fills_says_so_once_and_again_when_it_resumes(
        tmp_path, capfd):
    from permanent.cli import _log_to_file
    from permanent.config import Config

    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    root.setLevel(logging.INFO)
    stderr = logging.StreamHandler(sys.stderr)
    root.addHandler(stderr)
    try:
        with small_disk(tmp_path / "disk", 1) as disk:
            path = disk / "log" / "permanent.log"
            config = Config()
            config = config.replace(care=dataclasses.replace(config.care, log_file=str(path)))
            _log_to_file(config)
            filler = fill(disk, leave=PAGE)
            for n in range(200):   # some 12 KiB: three times the room
                logging.getLogger("permanent.test").info("line %d of a full disk", n)
            filler.unlink()
            logging.getLogger("permanent.test").info("line 200, with room again")
            lines = path.read_text().splitlines()
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    said = capfd.readouterr().err
    assert "Logging error" not in said and "Traceback" not in said, said[:2000]
    assert said.count("cannot write to the log file") == 1, said[-2000:]
    assert said.count("writing to the log file") == 1
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} permanent", line)
               and line.endswith(("disk", "again", "written")) for line in lines), lines
    assert lines[-2].endswith("with room again") and "writing to the log file" in lines[-1]


@pytest.mark.slow
def test_a_warm_start_that_cannot_be_written_leaves_nothing_torn(tiny_model, tmp_path,
                                                                 monkeypatch, caplog):
    """The model process keeps a warm start after its first pass. On a full disk that must
    cost the next start its time and nothing else: no crash, no half-written file left
    to fill the disk or to be read, and a file cut short later is refused, not loaded."""
    from permanent.config import Config, ModelConfig
    from permanent.model.local import warm_start
    from permanent.model.local.generator import load_generator
    from permanent.model.local.store import resolve

    settings = ModelConfig(name=str(tiny_model))
    text = Config().text
    with small_disk(tmp_path / "disk", 32) as disk:
        folder = disk / "warm"
        monkeypatch.setattr(warm_start, "_folder", lambda: folder)

        def load_and_keep():
            generator = load_generator(resolve(settings), settings, text)
            "".join(e.text for e in generator.write_pass(0))
            generator.keep_warm()
            return generator

        filler = fill(disk, leave=64 * 1024)
        assert "warm start" not in load_and_keep().runtime   # no crash: it said why instead
        assert "could not keep a warm start" in caplog.text
        assert list(folder.iterdir()) == [], list(folder.iterdir())   # nothing left behind
        filler.unlink()
        load_and_keep()
        kept = next(folder.glob("*.safetensors"))
        assert load_generator(resolve(settings), settings, text).runtime.endswith("(warm start)")
        data = kept.read_bytes()
        print(f"warm start of the tiny model: {len(data) / 2**20:.1f} MiB")
        for cut in (len(data) - 1, len(data) // 2):   # its last byte missing, or half of it
            kept.write_bytes(data[:cut])
            caplog.clear()
            assert "warm start" not in load_generator(resolve(settings), settings,
                                                      text).runtime
            assert "unreadable" in caplog.text
