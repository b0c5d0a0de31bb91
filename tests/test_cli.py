"""The command line's user errors: each is one line on stderr and a non-zero exit, never a traceback."""

import subprocess
import sys

import pytest

from moecover import batch
from moecover._cli import build_parser

GRID = """
[spec]
experts = [3, 2]
top_k = 1
d_model = 2
expert_hidden = 2

[inputs]
n = 4

[estimate]
samples = 1500
replicates = 1
"""

# Runs the command line with matplotlib unimportable (as on an install without the [plot] extra).
WITHOUT_MATPLOTLIB = (
    "import sys; sys.modules['matplotlib'] = None; from moecover._cli import main; sys.exit(main(sys.argv[1:]))"
)


def cli(*args, without_matplotlib=False, **kwargs):
    command = [sys.executable, "-c", WITHOUT_MATPLOTLIB] if without_matplotlib else [sys.executable, "-m", "moecover"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, **kwargs)


def assert_one_line_error(result, code, *needles):
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    config = directory / "grid.toml"
    config.write_text(GRID)
    path = directory / "grid.db"
    done = cli("run", config, "--db", path, "--quiet")
    assert done.returncode == 0, done.stderr
    return path


def test_show_on_a_file_that_is_not_a_database(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_text("these are not the results you are looking for\n" * 100)
    assert_one_line_error(cli("show", junk), 2, str(junk), "not a moecover results database")
    assert_one_line_error(cli("report", junk, "--out", tmp_path / "out"), 2, str(junk))


def test_show_on_a_missing_file_creates_nothing(tmp_path):
    assert_one_line_error(cli("show", tmp_path / "none.db"), 2, "no such file")
    assert not (tmp_path / "none.db").exists()


def test_demo_without_matplotlib_names_the_install_command(tmp_path):
    result = cli("demo", "--samples", "2000", "--quiet", "--plot", tmp_path / "d.png", without_matplotlib=True)
    assert_one_line_error(result, 2, "matplotlib", 'pip install "moecover[plot]"')
    # without a plot the demo needs no matplotlib
    plain = cli("demo", "--samples", "2000", "--quiet", "--plot", "", without_matplotlib=True)
    assert plain.returncode == 0, plain.stderr
    assert "slope" in plain.stdout


def test_report_without_matplotlib_writes_the_tables_and_says_plots_need_it(db, tmp_path):
    out = tmp_path / "report"
    result = cli("report", db, "--out", out, without_matplotlib=True)
    assert_one_line_error(result, 0, "matplotlib", 'pip install "moecover[plot]"')
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for row in batch.stored_rows(db):  # the rows are named by what varies across the grid
        assert f"| experts={row.spec.experts} | {row.estimate.regime.replace('_', '-')} |" in markdown
    assert "No plots" in markdown and "No plots" in (out / "report.html").read_text(encoding="utf-8")
    assert not list(out.glob("*.png"))


def test_show_into_a_closed_pipe_ends_quietly(db):
    command = [sys.executable, "-m", "moecover", "show", str(db)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        child.stdout.close()  # the reader is gone before the first line is written (as `| head -0`)
        stderr = child.stderr.read()
        assert child.wait(timeout=60) == 141
    assert "Traceback" not in stderr and "Error" not in stderr, stderr


def test_unreadable_and_malformed_configs(tmp_path):
    assert_one_line_error(cli("run", tmp_path / "none.toml"), 2, "none.toml")
    assert_one_line_error(cli("run", tmp_path), 2, str(tmp_path))  # a directory
    bad = tmp_path / "bad.toml"
    bad.write_text("[spec\nexperts = 2\n")
    assert_one_line_error(cli("run", bad), 2, "bad.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert_one_line_error(cli("run", binary), 2, "binary.toml")


def test_a_report_directory_that_cannot_be_made(db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_one_line_error(cli("report", db, "--out", blocker), 2, str(blocker))


def test_show_lists_rows_in_the_reports_grid_order(db):
    table = cli("show", db).stdout.splitlines()[1:]
    keys = [line.split()[0] for line in table]
    assert keys == [row.key for row in batch.stored_rows(db)]
    assert [int(line.split()[1]) for line in table] == [2, 3]  # experts ascending, not config order


def test_progress_only_on_a_terminal_or_when_asked(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(GRID)
    quiet = cli("run", config, "--db", tmp_path / "a.db")  # stderr is a pipe here, not a terminal
    assert quiet.returncode == 0 and "\r" not in quiet.stderr and "ETA" not in quiet.stderr
    asked = cli("run", config, "--db", tmp_path / "b.db", "--progress")
    assert asked.returncode == 0 and "\r" not in asked.stderr
    assert "2/2 grid points" in asked.stderr


def test_every_argument_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {"demo", "run", "show", "report", "findings"}
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"moecover {name}: {action.dest} has no help"
        assert "(default:" in sub.format_help() or name == "show"
