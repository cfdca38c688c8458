"""HTTP load: 20 clients x 100 submissions against `itercomp annotate serve` in a subprocess, with retries of the
same submission key, simultaneous duplicates and invalid posts mixed in. Nothing lost, nothing doubled, every
stored row what was sent. (bench/annotation_load.py runs the same scenario and reports the throughput.)"""

from __future__ import annotations

import pytest

from annotation_app.loadtest import LoadConfig, run_load


def test_twenty_clients_hundred_submissions_each(tmp_path):
    result = run_load(tmp_path, LoadConfig(clients=20, submissions=100))
    assert result["errors"] == []
    assert result["stored"] == result["acknowledged"] == result["expected"] == 2000
    assert result["lost"] == 0
    assert result["duplicated"] == 0 and result["duplicate_annotator_task"] == 0
    assert result["mismatched"] == 0
    # The scenario really mixed in what it should have.
    assert result["retries"] >= 100 and result["races"] >= 20 and result["invalid_refused"] >= 20


@pytest.mark.slow
def test_server_killed_mid_load_loses_nothing(tmp_path):
    """SIGKILL the server during the load and start it again: clients re-send what got no answer (same keys);
    every acknowledged ranking is stored exactly once."""
    result = run_load(tmp_path, LoadConfig(clients=20, submissions=50, crash_after=5))
    assert result["server_restarts"] == 1 and result["transport_retries"] > 0
    assert result["errors"] == []
    assert result["stored"] == result["acknowledged"] == result["expected"]
    assert result["lost"] == result["duplicated"] == result["mismatched"] == 0
