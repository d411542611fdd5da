"""Job files: every file in jobs/ is valid, keys and types are checked, --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import CelanturOptions, ClearmlOptions, OptionError
from pipeline.jobs import load_job

JOBS = sorted((Path(__file__).parent.parent / "jobs").glob("*.toml"))
ENVIRONMENT = {
    "RAW_PREFIX": "s3://raw/celantur/",
    "STATS_PREFIX": "s3://stats/out/",
    "VIDEO_METADATA_PREFIX": "s3://raw/videos/",
    "FRAMES_URL": "s3://exports/frames.jsonl",
    "MASK_LABELS_URL": "s3://exports/mask_labels.json",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.name)
def test_every_shipped_job_is_valid(job: Path, environment: None) -> None:
    options = load_job(job)
    assert isinstance(options, (CelanturOptions, ClearmlOptions))
    assert "${" not in options.output


def test_shipped_jobs_cover_the_typical_runs() -> None:
    assert {p.name for p in JOBS} >= {
        "nightly-celantur.toml",
        "video-metadata.toml",
        "clearml-frames.toml",
        "incremental-rerun.toml",
    }


def test_values_types_and_environment(environment: None) -> None:
    options = load_job(next(p for p in JOBS if p.name == "clearml-frames.toml"))
    assert isinstance(options, ClearmlOptions)
    assert options.frames == "s3://exports/frames.jsonl"
    assert options.uri_map == ("https://s3.amazonaws.com/allegro-datasets/=s3://allegro-datasets/",)
    assert options.storage_options == {"anon": True}
    assert options.execution.progress is False


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_overrides_and_nested_tables(tmp_path: Path) -> None:
    job = _write(
        tmp_path, 'command = "celantur"\nsource = "a"\noutput = "b"\n[execution]\nworkers = 2\n'
    )
    options = load_job(
        job, ["mask_scale=40", "execution.scheduler=sync", "storage_options.anon=true",
              "execution.io_concurrency=32"],
    )  # fmt: skip
    assert isinstance(options, CelanturOptions)
    assert options.mask_scale == 40
    assert options.execution.scheduler == "sync" and options.execution.workers == 2
    assert options.execution.io_concurrency == 32
    assert options.storage_options == {"anon": True}


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ('source = "a"\noutput = "b"\n', [], "'command' must be one of celantur, clearml"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\nmask_scal = 5\n', [],
         "unknown job key 'mask_scal'"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\n', ["mask_scale=x"],
         "job key 'mask_scale' must be int | None, got 'x'"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\nincremental = 1\n', [],
         "job key 'incremental' must be bool"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\n[execution]\nthreads = 2\n', [],
         "unknown job key 'execution.threads'"),
        ('command = "celantur"\nsource = "${NOT_SET_ANYWHERE}"\noutput = "b"\n', [],
         "environment variable NOT_SET_ANYWHERE is not set"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\nencoding = "v27"\n', [],
         "job key 'encoding' must be one of v26, legacy, legacy-red, auto"),
        ('command = "clearml"\nframes = "f"\noutput = "b"\nmode = "beta"\n', [],
         "job key 'mode' must be one of pixel, alpha, auto"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\nmask_scale = 0\n', [],
         "option 'mask_scale' must be an integer percent 1..100"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\n[execution]\nio_concurrency = 0\n',
         [], "option 'io_concurrency' must be a positive integer"),
        ("command = \n", [], "not TOML"),
        ('command = "celantur"\nsource = "a"\noutput = "b"\n', ["novalue"],
         "option '--set' expects key=value"),
    ],
)  # fmt: skip
def test_bad_jobs_name_the_key(
    tmp_path: Path, text: str, overrides: list[str], message: str
) -> None:
    with pytest.raises(OptionError) as error:
        load_job(_write(tmp_path, text), overrides)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$JOB_ROOT/x", "/data/x"),
        ("${JOB_ROOT}x", "/datax"),
        ("${JOB_UNSET:-s3://fallback/}", "s3://fallback/"),
        ("${JOB_EMPTY:-default}", "default"),
        ("x${JOB_EMPTY-default}", "x"),
        ("${JOB_UNSET-d}/${JOB_ROOT:-unused}", "d//data"),
        ("cost$$5", "cost$5"),
    ],
)
def test_shell_like_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    monkeypatch.setenv("JOB_ROOT", "/data")
    monkeypatch.setenv("JOB_EMPTY", "")
    monkeypatch.delenv("JOB_UNSET", raising=False)
    options = load_job(_write(tmp_path, f'command = "celantur"\nsource = "{text}"\noutput = "o"\n'))
    assert isinstance(options, CelanturOptions)
    assert options.source == expected


@pytest.mark.parametrize("text", ["$", "${JOB_ROOT", "${JOB_ROOT:=x}", "$1/x", "${}", "a $ b"])
def test_other_dollar_forms_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("JOB_ROOT", "/data")
    job = _write(tmp_path, f'command = "celantur"\nsource = "a"\noutput = "{text}"\n')
    with pytest.raises(OptionError, match=r"job key 'output': .* holds a '\$' that is not"):
        load_job(job)


def test_cli_run_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main
    from pipeline.sampledata.celantur import make_celantur_tree

    tree = make_celantur_tree(tmp_path / "in", seed=1, images=3)
    job = _write(
        tmp_path, f'command = "celantur"\nsource = "{tree.root}"\noutput = "{tmp_path / "out"}"\n'
    )
    assert main(["run", str(job), "--set", "execution.scheduler=sync"]) == 0
    assert (tmp_path / "out" / "_run.json").exists()
    assert main(["run", str(job), "--set", "colour=red"]) == 2
    assert "unknown job key 'colour'" in capsys.readouterr().err
    assert main(["run", str(job), "--set", "output=$STATS_DIR_NOT_SET/x"]) == 2
    assert "environment variable STATS_DIR_NOT_SET is not set" in capsys.readouterr().err
