"""The chaos run of bench/chaos.py, small (issue 17): four extraction runs on overlapping
encoder sets of one store, one SIGKILLed at random moments and rerun, a dask worker SIGKILLed
mid-run, on .zarr, .h5 and an S3 API server on 127.0.0.1. Every process ends with exit 0, no
clip is lost or served twice, verify is clean and every stream is bit-equal to a quiet run.
"""

from __future__ import annotations

import pytest

from bench import chaos


@pytest.mark.slow  # 10-25 minutes on 2 cores: 3 stores x (4 extractions + a dask cluster)
def test_chaos_runs_end_equal_to_a_quiet_run(tmp_path, capsys):
    results = chaos.main(["--clips", "8", "--seconds", "0.4", "--work", str(tmp_path),
                          "--kill-window", "5,20"])
    table = capsys.readouterr().out
    assert [r.store for r in results] == ["zarr", "h5", "s3"], table
    for result in results:
        assert result.kills >= 1 and result.worker_kills == 1, table
        assert result.ok, (table, result.verify_output)
