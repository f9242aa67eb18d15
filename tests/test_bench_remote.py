"""`permanent bench remote` on the real piece: both launches measured, and the gallery's
side saw the piece (messages received, the page's events, pictures)."""

import pytest

from permanent.measure.remote_load import measure_remote, print_remote

pytestmark = pytest.mark.slow


def test_the_bench_measures_the_piece_with_its_gallery_tools_off_and_on(
        embedded_model, capsys):
    # A short settle: the test asks only that every part is counted, not what it costs.
    result = measure_remote(None, seconds=4.0, rounds=1, thumbnail_seconds=1.0,
                            settle_seconds=1.0)
    off, on = result["launches"]
    assert not off["on"] and on["on"]
    for launch in (off, on):
        assert launch["frames"] > 100 and launch["frame_p99_ms"] > 0, launch
        assert 0 < launch["cpu_share_of_one_core"] < 1.0, launch
        assert 0 < launch["main_thread_share"] <= launch["cpu_share_of_one_core"] + 0.01
        assert 0 <= launch["other_threads_share"] < 0.5, launch
    assert on["osc_messages"] >= 4, on       # the fan each second, and tokens
    assert on["page_events"] >= 4, on        # the page, its vitals, the fan each second
    assert on["pictures"] >= 2, on
    assert "osc_messages" not in off
    print_remote(result)
    shown = capsys.readouterr().out
    assert "extra CPU with OSC and the status page on" in shown
