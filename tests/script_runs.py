"""Running a step script in the test process and checking that it failed with one line, for the hostile-input
tests (starting TensorFlow in a subprocess costs seconds; `cli.run` gives the same exit codes in-process)."""
import io
import runpy
from contextlib import redirect_stderr, redirect_stdout

from animeml.core import cli
from animeml.core.paths import ROOT


def run_script(script, *args):
    """(exit status, stdout, stderr) of `python script args`, run in this process through cli.run."""
    main = runpy.run_path(str(ROOT / script))["main"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            cli.run(main, [str(a) for a in args])
            status = 0
        except SystemExit as stop:
            status = stop.code
    return status, out.getvalue(), err.getvalue()


def assert_one_error_line(status, err, *fragments):
    assert status == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
