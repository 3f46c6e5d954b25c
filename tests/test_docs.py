"""The docs cannot go stale silently: every flag a page names exists in the `--help` of the script it is written
with, every repository path it names exists, and docs/render.py puts a command's real output into its page."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = {path.stem: path for path in [*(ROOT / "scripts").glob("*.py"), ROOT / "docs" / "render.py"]}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_]*(?:-[a-z0-9_]+)*(?![\w*-])")  # not a wildcard: --adam_*
SCRIPT = re.compile(r"(?:scripts|docs)/(\w+)\.py")
# Other tools' flags the pages use: accelerate's launcher (--quiet: its -q), pytest, mkdocs.
OTHER_TOOLS = {"--multi_gpu", "--num_processes", "--config_file", "--strict", "--quiet"}
TOP = r"(?:scripts|training|tests|configs|docs|modeling_resnet_cbam|\.ci)"
REPO_PATH = re.compile(rf"(?<![\w./-])({TOP}/[\w./*-]*[\w*])")


def exists(path: str) -> bool:
    """A path or a glob of the repository; a placeholder (docs/runs/NAME) is not a path."""
    if any(part.isupper() for part in re.split(r"[/.]", path)):
        return True
    return any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()


def load_render():
    spec = importlib.util.spec_from_file_location("render", ROOT / "docs" / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    return render


render = load_render()


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """Each script's --help, as a user sees it."""
    texts = {}
    for name, path in SCRIPTS.items():
        done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{path} --help: {done.stderr[-1000:]}"
        texts[name] = done.stdout
    return texts


def written(page: Path) -> str:
    """What a page's author wrote: rendered outputs left out (they come from the code), render commands kept."""
    return render.BLOCK.sub(lambda m: m.group(1), page.read_text())


def segments(text: str) -> list[str]:
    """Commands and code spans, each on its own (continuation lines joined), then the prose lines around them."""
    commands = re.findall(r"<!-- render[^:]*: (.+?) -->", text)
    text = re.sub(r"<!-- render[^:]*: .+? -->", "", text)
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    text = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.DOTALL)
    code_lines = [line for block in fenced for line in block.replace("\\\n", " ").splitlines()]
    spans = re.findall(r"`([^`\n]+)`", text)
    prose = re.sub(r"`[^`\n]+`", "", text).splitlines()
    return commands + code_lines + spans + prose


def flag_owners(segment: str) -> list[tuple[str, str | None]]:
    """(flag, the script it is written with, or None when no script precedes it in the segment)."""
    scripts = [(m.start(), m.group(1)) for m in SCRIPT.finditer(segment)]
    owners = []
    for match in FLAG.finditer(segment):
        before = [name for start, name in scripts if start < match.start()]
        owners.append((match.group(0), before[-1] if before else None))
    return owners


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_flag_a_page_names_is_in_its_scripts_help(page, helps):
    every_help = "\n".join(helps.values())
    wrong = []
    for segment in segments(written(page)):
        for flag, script in flag_owners(segment):
            if script is None:
                known = flag in OTHER_TOOLS or re.search(rf"{flag}\b", every_help)
            else:
                known = script in helps and re.search(rf"{flag}\b", helps[script])
            if not known:
                wrong.append(f"{flag} ({f'scripts/{script}.py' if script else 'no script'}): {segment.strip()[:100]}")
    assert not wrong, f"{page.name} names flags its scripts do not have:\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_repository_path_a_page_names_exists(page):
    missing = sorted({path for path in REPO_PATH.findall(written(page)) if not exists(path)})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def test_the_checks_catch_a_wrong_flag_and_a_wrong_path(helps):
    page = "Run `python scripts/predict.py --model m --topk 3` and read `training/nowhere.py`.\n"
    owners = [owner for segment in segments(page) for owner in flag_owners(segment)]
    assert ("--topk", "predict") in owners and not re.search(r"--topk\b", helps["predict"])
    assert ("--model", "predict") in owners and re.search(r"--model\b", helps["predict"])
    assert REPO_PATH.findall(page) == ["scripts/predict.py", "training/nowhere.py"]


def test_every_page_block_runs_a_command_of_this_repository():
    blocks = [match["command"] for page in PAGES for match in render.BLOCK.finditer(page.read_text())]
    assert len(blocks) >= 20, "the pages show their outputs through docs/render.py"
    for command in blocks:
        names = SCRIPT.findall(command) + re.findall(r"docs/examples/(\w+)\.py", command)
        assert names or command.startswith(("cat docs/runs/", "grep ")), command


def test_render_replaces_a_block_with_the_commands_output_commit_and_host(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- render: echo rendered-$((6 * 7)) -->\nstale output\n<!-- /render -->\nafter\n"
                    "<!-- render-md: printf '| a |\\n|---|\\n| 1 |' -->\n<!-- /render -->\n")
    assert render.render_page(page, "stamp of the commit and host") == 2
    text = page.read_text()
    assert "stale output" not in text and "```text\n$ echo rendered-$((6 * 7))\nrendered-42\n```" in text
    assert "| a |\n|---|\n| 1 |\n" in text and text.count("stamp of the commit and host") == 2
    assert text.startswith("before\n") and "after\n" in text
    again = text
    assert render.render_page(page, "stamp of the commit and host") == 2
    assert re.sub(r"; \d+ s", "", page.read_text()) == re.sub(r"; \d+ s", "", again), "rendering twice: no diff"


def test_a_failing_command_stops_the_rendering_and_leaves_the_page(tmp_path):
    page = tmp_path / "page.md"
    original = "<!-- render: echo first -->\nold\n<!-- /render -->\n<!-- render: exit 3 -->\nold\n<!-- /render -->\n"
    page.write_text(original)
    with pytest.raises(SystemExit, match="exited with 3 \\(expected 0\\)"):
        render.render_page(page, "stamp")
    assert page.read_text() == original


def test_an_output_is_shown_as_a_terminal_shows_it(tmp_path):
    """stdout and stderr in the order they were written, progress bars at their last state, no colour codes."""
    script = tmp_path / "talk.py"
    script.write_text("import sys\nprint('first, to stdout')\nprint('second, to stderr', file=sys.stderr)\n"
                      "print('third, to stdout')\nsys.stderr.write('\\x1b[1mbold\\x1b[0m 10%\\r 50%\\r100%\\n')\n")
    assert render.run(f"python {script}") == "first, to stdout\nsecond, to stderr\nthird, to stdout\n100%"


def test_the_readmes_main_command_ends_a_refused_run_on_the_projects_own_words(tmp_path):
    """The README's exact main command, with a mistyped value: the script's error is the last line, with no
    launcher traceback and no block of launcher warnings before it."""
    import os
    import shlex

    block = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    main = next(line for line in block.splitlines() if line.startswith("accelerate launch"))
    argv = shlex.split(main)
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "out")
    bin_dir = str(Path(sys.executable).parent)
    done = subprocess.run([*argv, "--seed", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"})
    said = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0 and said[-1] == "error: --seed must be at least 0, got -1", said[-5:]
    assert "Traceback" not in done.stderr and "were not passed to `accelerate launch`" not in done.stderr
    assert not (tmp_path / "out").exists()
