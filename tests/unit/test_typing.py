"""The public API is typed: mypy --strict accepts good usage and rejects bad usage.

Runs mypy in-process on the samples in tests/typing/. bad_usage.py marks each
line mypy must reject with a ``# error:`` comment; no other line may be
reported. mypy takes a few seconds, hence the generous timeout.
"""

import re
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "typing"
CONFIG = ROOT / "pyproject.toml"

pytestmark = pytest.mark.timeout(300)  # slow-ish: mypy runs twice

_REPORT = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for this module: the second run reuses tickerq's analysis."""
    return tmp_path_factory.mktemp("mypy_cache")


def run_mypy(sample: Path, cache_dir: Path) -> tuple[str, int]:
    stdout, stderr, status = mypy_api.run(
        [
            "--config-file",
            str(CONFIG),
            "--strict",
            "--cache-dir",
            str(cache_dir),
            "--no-color-output",
            "--no-error-summary",
            "--show-absolute-path",
            str(sample),
        ]
    )
    assert stderr == "", f"mypy failed to run:\n{stderr}"
    return stdout, status


def error_lines(stdout: str, sample: Path) -> dict[int, list[str]]:
    """Line number -> mypy error messages reported for ``sample``."""
    errors: dict[int, list[str]] = {}
    for raw in stdout.splitlines():
        match = _REPORT.match(raw)
        if match is None or match["kind"] != "error":
            continue
        assert Path(match["path"]).resolve() == sample.resolve(), f"error outside sample: {raw}"
        errors.setdefault(int(match["line"]), []).append(match["text"])
    return errors


def expected_lines(sample: Path) -> set[int]:
    """Lines carrying a ``# error:`` marker."""
    lines = sample.read_text(encoding="utf-8").splitlines()
    return {number for number, text in enumerate(lines, start=1) if "# error:" in text}


@pytest.fixture(scope="module")
def bad_report(cache_dir: Path) -> tuple[str, int]:
    """mypy's output and exit status for bad_usage.py (run once)."""
    return run_mypy(SAMPLES / "bad_usage.py", cache_dir)


def test_ok_usage_passes_strict(cache_dir: Path) -> None:
    sample = SAMPLES / "ok_usage.py"
    stdout, status = run_mypy(sample, cache_dir)
    assert error_lines(stdout, sample) == {}, stdout
    assert status == 0, stdout


def test_bad_usage_errors_exactly_on_marked_lines(bad_report: tuple[str, int]) -> None:
    sample = SAMPLES / "bad_usage.py"
    expected = expected_lines(sample)
    assert len(expected) >= 4, "the sample lost its # error: markers"

    stdout, status = bad_report
    reported = error_lines(stdout, sample)

    missing = sorted(expected - set(reported))
    unexpected = {line: reported[line] for line in sorted(set(reported) - expected)}
    assert not missing, f"mypy accepted lines it must reject: {missing}\n{stdout}"
    assert not unexpected, f"mypy rejected unmarked lines: {unexpected}\n{stdout}"
    assert status == 1, stdout


def test_bad_usage_errors_are_about_the_request_type(bad_report: tuple[str, int]) -> None:
    """The errors come from the typed handle (not, say, an import failure)."""
    sample = SAMPLES / "bad_usage.py"
    stdout, _ = bad_report
    messages = " | ".join(text for texts in error_lines(stdout, sample).values() for text in texts)
    assert '"Sms"' in messages
    assert 'expected "Email | None"' in messages
    assert 'expected "None"' in messages
    assert '"Email" has no attribute "number"' in messages
    assert "import" not in messages.lower()
