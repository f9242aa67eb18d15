"""The piece's timing events, as the bench reads them (the writer alone; test_piece.py reads
them from a real launch)."""

from permanent.timings import ENVIRONMENT, Timings, read_timings


def test_without_the_variable_nothing_is_opened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    timings = Timings.from_environment(launched=10.0, environ={})
    timings.write("hum_playing", 11.0)
    timings.token_shown(12.0)
    timings.close()
    assert timings.path is None and list(tmp_path.iterdir()) == []


def test_each_model_process_has_one_first_token(tmp_path):
    path = tmp_path / "timings.jsonl"
    timings = Timings.from_environment(launched=100.0, environ={ENVIRONMENT: str(path)})
    timings.write("window_open", 100.5, hum_pid=1, model_pid=2)
    timings.token_shown(102.414)
    timings.token_shown(102.6)
    timings.model_restarted(110.0, pid=3)
    timings.token_shown(115.0)
    timings.close()
    events = read_timings(path)
    assert [e["event"] for e in events] == ["window_open", "first_token", "model_restarted",
                                            "first_token"]
    assert events[0]["model_pid"] == 2
    assert events[1] == {"event": "first_token", "after_launch_s": 2.41,
                         "monotonic_s": 102.414, "restarts": 0}
    assert events[3]["restarts"] == 1 and events[3]["after_launch_s"] == 15.0


def test_a_line_still_being_written_is_left_for_later(tmp_path):
    path = tmp_path / "timings.jsonl"
    path.write_text('{"event": "first_frame", "after_launch_s": 1.0}\n{"event": "fi')
    assert read_timings(path) == [{"event": "first_frame", "after_launch_s": 1.0}]
    assert read_timings(tmp_path / "none.jsonl") == []


def test_a_file_it_cannot_write_stops_the_events_not_the_piece(tmp_path):
    timings = Timings(tmp_path / "missing" / "timings.jsonl", launched=0.0)
    timings.write("first_frame", 1.0)
    timings.write("first_token", 2.0)
    assert timings.path is None


def test_frames_from_the_first_token_on_are_summed_up_at_close(tmp_path):
    path = tmp_path / "timings.jsonl"
    timings = Timings.from_environment(launched=100.0, environ={ENVIRONMENT: str(path)})
    timings.frame_made(0.5)   # while loading: not counted
    timings.token_shown(101.0)
    for i in range(100):
        timings.frame_made(0.001 * (i + 1))   # 1 ms to 100 ms
    timings.write("stopped", 120.0)
    timings.close()
    frames = read_timings(path)[-1]
    assert frames["event"] == "frames" and frames["count"] == 100
    assert frames["p50_ms"] == 51.0 and frames["p99_ms"] == 100.0
    assert frames["max_ms"] == 100.0 and frames["after_launch_s"] == 20.0
