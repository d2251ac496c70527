"""The toolkit's output goes through one object a library caller can capture."""
from deploy import console
from deploy.config import load_project
from deploy.local import checks


def test_a_library_caller_captures_what_a_verb_says_and_standard_output_gets_none_of_it(project, capsys):
    with console.capture() as said:
        checks.lint(load_project(project.root), "HEAD")
    assert "lint: no revisions to lint" in said.getvalue()
    assert capsys.readouterr().out == ""
    console.say("after the block")
    assert capsys.readouterr().out == "after the block\n"


def test_captured_output_is_never_coloured():
    with console.capture() as said:
        console.warn("careful")
    assert said.getvalue() == "warning: careful\n"
