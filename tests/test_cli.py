"""The parser every step script uses: --config files, command-line precedence, deprecated spellings, types."""
import argparse
import subprocess
import sys

import pytest

from animeml.core import cli
from animeml.core.io import PipelineError


def make_parser():
    parser = cli.parser("test")
    parser.add_argument("--epochs", type=cli.positive_int, default=3)
    parser.add_argument("--out-dir", default="out")
    parser.add_argument("--out", dest="out_dir", action=cli.deprecated("--out", "--out-dir"))
    return parser


def test_config_sets_defaults_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 7\nout-dir: from_config\n")
    assert cli.parse(make_parser(), ["--config", str(config)]).epochs == 7
    args = cli.parse(make_parser(), ["--config", str(config), "--epochs", "9"])
    assert (args.epochs, args.out_dir) == (9, "from_config")
    assert cli.settings_of(args) == {"epochs": 9, "out_dir": "from_config"}


def test_a_bad_config_is_one_line_naming_it(tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"epochz": 7}')
    with pytest.raises(PipelineError, match="unknown setting.*epochz"):
        cli.parse(make_parser(), ["--config", str(unknown)])
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [7\n")
    with pytest.raises(PipelineError, match="does not parse"):
        cli.parse(make_parser(), ["--config", str(broken)])
    with pytest.raises(PipelineError, match="cannot read config"):
        cli.parse(make_parser(), ["--config", str(tmp_path / "absent.yaml")])


def test_an_old_spelling_warns_once_and_still_works(capsys):
    args = cli.parse(make_parser(), ["--out", "x"])
    assert args.out_dir == "x"
    assert capsys.readouterr().err.count("deprecated") == 1


@pytest.mark.parametrize("kind,text", [(cli.positive_int, "0"), (cli.positive_int, "-1"), (cli.positive_int, "1.5"),
                                       (cli.positive_float, "0"), (cli.positive_float, "inf"),
                                       (cli.probability, "1.5"), (cli.non_empty, "  ")])
def test_types_refuse_nonsense(kind, text):
    with pytest.raises(argparse.ArgumentTypeError):
        kind(text)


def test_run_turns_errors_and_interrupts_into_exit_codes(capsys):
    def fails(argv):
        raise PipelineError("bad input")

    def interrupted(argv):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as error:
        cli.run(fails, [])
    assert error.value.code == 2 and capsys.readouterr().err == "error: bad input\n"
    with pytest.raises(SystemExit) as stop:
        cli.run(interrupted, [])
    assert stop.value.code == 130


def test_a_flag_that_starts_like_config_is_not_taken_for_it():
    parser = make_parser()
    parser.add_argument("--conf", type=float, default=0.25)
    assert cli.parse(parser, ["--conf", "0.05"]).conf == 0.05


@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_up_lines_only_with_verbose(verbose):
    """TensorFlow writes its oneDNN / CPU-feature lines from C++ at import, past TF_CPP_MIN_LOG_LEVEL. It turns
    oneDNN on by itself only on some CPUs (Intel with AVX-512 here, not an AVX2-only AMD), so the test asks for it:
    then an x86 TensorFlow says so at every start."""
    import os
    import subprocess
    import sys

    code = ("import sys; from animeml.core import cli; cli.parse(cli.parser('x'), sys.argv[1:]); "
            "import tensorflow as tf; print(tf.constant(2).numpy() * 2); print('python stderr', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code] + (["--verbose"] if verbose else []),
                          capture_output=True, text=True, timeout=120, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "4"
    assert ("oneDNN" in done.stderr) == verbose, done.stderr
    if not verbose:  # nor its other start-up lines
        assert "cpu_feature_guard" not in done.stderr and "absl::" not in done.stderr, done.stderr
    assert "python stderr" in done.stderr  # stderr is back after the import


def test_text_table_aligns_numbers_right_and_cuts_long_text():
    records = [{"rank": 1, "name": "Cowboy Bebop", "score": 8.75}, {"rank": 10, "name": "x" * 50, "score": None}]
    lines = cli.text_table(records, max_width=20).splitlines()
    assert lines[0].split() == ["rank", "name", "score"]
    assert lines[1].startswith("   1 Cowboy Bebop") and lines[1].endswith("8.75")
    assert lines[2].startswith("  10 " + "x" * 17 + "...")
    assert cli.text_table([]) == ""


def test_a_folder_or_file_in_the_way_of_an_output_is_one_line_and_leaves_it_alone(tmp_path):
    from animeml.core.io import write_json

    (tmp_path / "metrics.json").mkdir()
    (tmp_path / "metrics.json" / "mine.txt").write_text("the user's")
    with pytest.raises(PipelineError, match=r"metrics.json: a folder of that name is in the way"):
        write_json({"a": 1}, tmp_path / "metrics.json")
    assert (tmp_path / "metrics.json" / "mine.txt").read_text() == "the user's"
    (tmp_path / "reports").write_text("a file, not a folder")
    with pytest.raises(PipelineError, match=r"cannot write .*reports/score.json"):
        write_json({"a": 1}, tmp_path / "reports" / "score.json")
    assert (tmp_path / "reports").read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "reports"]  # no temporary file left


@pytest.mark.parametrize("through_run", [True, False])
def test_the_collector_skips_its_last_pass_at_the_exit_of_a_step(through_run):
    """cli.run freezes the heap at exit (TensorFlow's objects took 1 s to walk): a cycle alive then is left to the
    operating system, where a plain script collects it."""
    script = ("from animeml.core import cli\n"
              "class Loop:\n"
              "    def __init__(self): self.me = self\n"
              "    def __del__(self): print('collected', flush=True)\n"
              "def main(argv=None):\n"
              "    global loop\n"
              "    loop = Loop()\n"
              f"cli.run(main, []) if {through_run} else main()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ([] if through_run else ["collected"])
