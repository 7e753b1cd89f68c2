"""A study killed with SIGKILL while sampling and again while judging resumes to the same result."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import make_tiny_lm

# Runs a study in a child process; the patched functions SIGKILL it after N calls, i.e. at a real,
# arbitrary point between two saved chunks (nothing is flushed or cleaned up first).
DRIVER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    kill_stage, kill_after = sys.argv[3], int(sys.argv[4])
    calls = {"n": 0}

    def killing(fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapper

    import misdirection.sample, misdirection.judge.scoring
    if kill_stage == "sample":
        misdirection.sample.sample_answers = killing(misdirection.sample.sample_answers)
    elif kill_stage == "judge":
        misdirection.judge.scoring.write_table = killing(misdirection.judge.scoring.write_table)
    from misdirection.study.config import load_config
    from misdirection.study.pipeline import run_study
    run_study(load_config(sys.argv[1]), sys.argv[2], progress=False)
""")


def _run(driver: Path, config: Path, out: Path, stage: str = "none", after: int = 0) -> int:
    return subprocess.run(
        [sys.executable, str(driver), str(config), str(out), stage, str(after)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    ).returncode


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    pytest.importorskip("misdirection.judge.learned")
    lm = make_tiny_lm("llama")
    model_dir = tmp_path / "tiny-model"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "resume",
                "base_model": str(model_dir),
                "seed": 3,
                "sampling": {
                    "questions": ["core"],
                    "samples_per_paraphrase": 2,
                    "max_new_tokens": 6,
                    "batch_size": 6,
                },
                "judging": {
                    "judge": "learned",
                    "rubrics": ["aligned", "coherent"],
                    "chunk_size": 5,
                },
            }
        )
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _run(driver, config, straight) == 0
    assert _run(driver, config, resumed, "sample", 2) == -9  # killed mid-sampling
    chunks = list((resumed / "stages" / "sample" / "base").glob("*/chunks/*.parquet"))
    assert (
        len(chunks) == 1
    )  # killed after sampling chunk 2, before saving it: only chunk 1 is on disk
    assert _run(driver, config, resumed, "judge", 3) == -9  # killed mid-judging
    judged = next((resumed / "stages" / "judge" / "base").glob("*/judged.parquet"))
    partial = pd.read_parquet(judged)
    assert 0 < (partial["aligned_judge"] != "").sum() < len(partial)  # some rows scored, not all
    assert _run(driver, config, resumed) == 0

    a = pd.read_parquet(next((straight / "stages" / "judge" / "base").glob("*/judged.parquet")))
    b = pd.read_parquet(judged)
    pd.testing.assert_frame_equal(a, b)  # same answers, same scores, nothing lost or duplicated
    ra = json.loads((straight / "results.json").read_text())
    rb = json.loads((resumed / "results.json").read_text())
    assert ra["conditions"] == rb["conditions"] and ra["effects"] == rb["effects"]
    assert rb["total_seconds"] >= rb["seconds"] > 0  # the killed run wrote no results.json
    # The judge's flags are counted from the judged table, per condition and in total.
    from misdirection.judge.scoring import flag_counts

    base = next(e for e in ra["conditions"] if e["name"] == "base")
    assert base["judge_flags"] == {"n": len(a), **flag_counts(a)}
    assert ra["judge"]["flags"]["n"] == sum(e["judge_flags"]["n"] for e in ra["conditions"])
