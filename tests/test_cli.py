"""`alexft classify` through click's runner and, once, as a real process."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from alexft.predict import predict_files
from alexft.preprocess import IMAGE_SUFFIXES, UNREAD_IMAGE_SUFFIXES
from alexft.cli import main
from fixtures import photo_paths
from test_preprocess import bad_images


def run(*args, **env):
    return CliRunner().invoke(main, list(map(str, args)), env={k: str(v) for k, v in env.items()}, catch_exceptions=False)


@pytest.fixture
def photo_folder(tmp_path):
    """Real photos in nested folders, plus every kind of broken file."""
    folder = tmp_path / "photos"
    (folder / "cats").mkdir(parents=True)
    shutil.copy(photo_paths()["chelsea"], folder / "cats" / "chelsea.png")
    shutil.copy(photo_paths()["coffee"], folder / "coffee.png")
    shutil.copy(photo_paths()["china"], folder / "china.jpg")
    for name, (content, _) in bad_images().items():
        (folder / "broken").mkdir(exist_ok=True)
        (folder / "broken" / name).write_bytes(content)
    return folder


def test_json_lines_for_a_folder_with_broken_files(photo_folder, canonical_weights_file):
    result = run("classify", photo_folder, "--json", "--weights", canonical_weights_file)
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    paths = [line["path"] for line in lines]
    # A folder's files in formats alexft does not read (.tga, .ico, .HEIC, ...) are left out, in one warning.
    unread = sorted(name for name in bad_images() if Path(name).suffix.lower() in UNREAD_IMAGE_SUFFIXES)
    broken = [name for name in bad_images() if Path(name).suffix.lower() in IMAGE_SUFFIXES]  # (not clip.mp4: no image)
    assert len(unread) == 5 and f"{len(unread)} photo(s) in formats alexft does not read are left out (e.g. " \
        f"broken/{unread[0]})" in result.stderr
    assert paths == sorted(paths) and len(lines) == 3 + len(broken)
    good = [line for line in lines if "predictions" in line]
    assert sorted(os.path.basename(line["path"]) for line in good) == ["chelsea.png", "china.jpg", "coffee.png"]
    for line in good:
        probabilities = [p["probability"] for p in line["predictions"]]
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert set(line["predictions"][0]) == {"index", "label", "probability"}
    for line in lines:
        if "error" in line:
            assert line["error"].startswith(line["path"] + ":")
    # The exit status says each bad input is named on stderr: with --json too, in the same words.
    named = [line[len("error: "):] for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert named == [line["error"] for line in lines if "error" in line] and len(named) == len(broken)
    assert f"{len(broken)} of {len(lines)} inputs could not be classified" in result.stderr


def test_human_output_and_exit_status_zero(canonical_weights_file):
    result = run("classify", photo_paths()["chelsea"], "-k", 3, "--weights", canonical_weights_file)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(photo_paths()["chelsea"])
    assert len(lines) == 4 and all(line.strip().split()[0].endswith("%") for line in lines[1:])


def test_ten_crop_output_matches_the_library(predictor, canonical_weights_file):
    path = photo_paths()["flower"]
    result = run("classify", path, "--ten-crop", "--json", "--top-k", 1000, "--weights", canonical_weights_file)
    [line] = [json.loads(text) for text in result.stdout.splitlines()]
    cli_probabilities = np.zeros(1000)
    for prediction in line["predictions"]:
        cli_probabilities[prediction["index"]] = prediction["probability"]
    [(_, expected, _)] = predict_files(predictor, [path], ten_crop=True)
    np.testing.assert_allclose(cli_probabilities, expected, rtol=1e-5, atol=1e-8)


def test_weights_from_environment_variable(canonical_weights_file):
    result = run("classify", photo_paths()["coffee"], "--json", ALEXFT_WEIGHTS=canonical_weights_file)
    assert result.exit_code == 0 and "predictions" in json.loads(result.stdout)


def test_user_errors_are_one_line_without_traceback(tmp_path, canonical_weights_file):
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"<html>oops</html>")
    result = run("classify", photo_paths()["coffee"], "--weights", broken)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"Error: {broken}: not a weights file (it is an HTML/XML page, perhaps an error page saved by a download); expected .npy, .npz or .caffemodel"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("classify", empty, "--weights", canonical_weights_file)
    assert result.exit_code == 2 and "no images found" in result.stderr


def test_no_weights_and_no_network_says_where_to_put_them():
    result = run("classify", photo_paths()["coffee"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: ") and "bvlc_alexnet.npy" in line and "(weights/ under the current folder)" in line
    assert "--weights" in line


@pytest.mark.parametrize("log_level", [None, "2"], ids=["TF_CPP_MIN_LOG_LEVEL unset", "TF_CPP_MIN_LOG_LEVEL=2"])
def test_installed_command_runs_in_a_fresh_process(canonical_weights_file, tmp_path, log_level):
    """Setting TF_CPP_MIN_LOG_LEVEL=2 to quiet TensorFlow once let its start-up lines through,
    an "E0000 ... cuInit" error among them: it printed them before reading the level."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "alexft")
    command = beside_python if os.path.exists(beside_python) else shutil.which("alexft")
    assert command, "the alexft console script is not installed"
    env = dict(os.environ, ALEXFT_WEIGHTS=str(canonical_weights_file), TF_CPP_MIN_LOG_LEVEL=log_level or "")
    if log_level is None:
        env.pop("TF_CPP_MIN_LOG_LEVEL")
    broken = tmp_path / "cut.jpg"
    broken.write_bytes(bad_images()["cut.jpg"][0])
    result = subprocess.run([command, "classify", photo_paths()["chelsea"], broken, "--runtime", "tensorflow"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == str(photo_paths()["chelsea"])
    # Only our own messages on stderr: TensorFlow's start-up noise is held back.
    assert result.stderr.splitlines() == [
        f"error: {broken}: truncated JPEG (no end-of-image marker)",
        "alexft: 1 of 2 inputs could not be classified",
    ]


def test_progress_bar_on_stderr_keeps_stdout_clean(tmp_path, canonical_weights_file):
    for index in range(10):
        shutil.copy(photo_paths()["camera"], tmp_path / f"{index}.png")
    result = run("classify", tmp_path, "--json", "--progress", "--batch-size", 4, "--weights", canonical_weights_file)
    assert result.exit_code == 0
    assert "10/10" in result.stderr and "img/s" in result.stderr
    assert len([json.loads(line) for line in result.stdout.splitlines()]) == 10
    quiet = run("classify", tmp_path, "--json", "--batch-size", 4, "--weights", canonical_weights_file)
    assert "img/s" not in quiet.stderr  # not a terminal: no bar unless asked


def test_a_top_k_beyond_the_models_classes_is_said_once(tmp_path):
    from alexft import weights
    from fixtures import random_params

    three = weights.save(weights.WeightSet({name: tuple(pair) for name, pair in random_params(seed=5, num_classes=3).items()},
                                           ["cat", "dog", "elk"]), tmp_path / "three.npz")
    # On TensorFlow: the LiteRT copy of a new weights file would take its one-off build here.
    result = run("classify", photo_paths()["chelsea"], "--top-k", 5, "--json", "--runtime", "tensorflow", "--weights", three)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["predictions"]) == 3
    assert result.stderr.splitlines() == ["alexft: note: --top-k 5, but the model knows 3 classes: each image gets all 3"]
    for asked in (["--top-k", 3], []):  # as many as it knows, or the default 5 never asked for: nothing to say
        quiet = run("classify", photo_paths()["chelsea"], *asked, "--json", "--runtime", "tensorflow", "--weights", three)
        assert quiet.exit_code == 0 and quiet.stderr == "", asked
        assert len(json.loads(quiet.stdout)["predictions"]) == 3


@pytest.mark.parametrize("command", [["features"], ["finetune"], ["weights", "fetch"]])
def test_every_output_option_has_the_short_form_users_type(command):
    """A user's `alexft features photos/ -o f.npz` got "No such option '-o'"; every --output
    takes -o, as cc, curl and sort do."""
    assert "-o, --output" in run(*command, "--help").output


def test_an_image_named_twice_is_read_once(photo_folder, canonical_weights_file, tmp_path):
    """`features d3 d3` wrote every row twice without a word; a folder and a file in it, too."""
    cats, chelsea = photo_folder / "cats", photo_folder / "cats" / "chelsea.png"
    again = f"{photo_folder}/./cats/../cats/chelsea.png"  # the same file under another spelling
    out = tmp_path / "f.npz"
    result = run("features", cats, chelsea, again, photo_folder / "coffee.png", "--layer", "fc7", "-o", out,
                 "--weights", canonical_weights_file)
    assert result.exit_code == 0, result.output
    with np.load(out) as stored:
        assert [os.path.basename(path) for path in stored["paths"]] == ["chelsea.png", "coffee.png"]
    assert result.stderr.count("alexft: warning: each image is read once: 2 inputs named again or inside a folder also given are "
                               "left out (e.g. ") == 1, result.stderr
    listed = run("classify", chelsea, photo_folder / "china.jpg", chelsea, "--json", "--weights", canonical_weights_file)
    assert [json.loads(line)["path"] for line in listed.stdout.splitlines()] == [str(chelsea), str(photo_folder / "china.jpg")]
    assert listed.stderr == ("alexft: warning: each image is read once: 1 input named again or inside a folder also given is "
                             f"left out (e.g. {chelsea}, named again)\n")
    linked = tmp_path / "link.png"
    linked.symlink_to(chelsea)  # a second name on purpose (datasets made of links): kept
    both = run("classify", chelsea, linked, "--json", "--weights", canonical_weights_file)
    assert len(both.stdout.splitlines()) == 2 and "read once" not in both.stderr


def test_a_class_folder_named_twice_keeps_its_labels(small_digits_folder, canonical_weights_file, tmp_path):
    """`features cl cl/`, `cl cl/digit_0` and `cl link-to-cl` read two folders as plain images
    and dropped the labels (the last two also wrote images twice)."""
    linked = tmp_path / "link"
    linked.symlink_to(small_digits_folder)
    for again, why in ((f"{small_digits_folder}/", "named again"), (small_digits_folder / "digit_0", f"inside {small_digits_folder}"),
                       (linked, "named again")):
        out = tmp_path / "f.npz"
        result = run("features", small_digits_folder, again, "--layer", "fc8", "-o", out, "--force",
                     "--weights", canonical_weights_file)
        assert result.exit_code == 0, result.output
        with np.load(out) as stored:
            assert len(stored["paths"]) == len(set(stored["paths"])) == 60 and len(stored["labels"]) == 60, again
        assert ("alexft: warning: each image is read once: 1 input named again or inside a folder also given is left out "
                f"(e.g. {str(again).rstrip('/')}, {why})") in result.stderr, result.stderr



def test_the_command_lists_give_whole_summaries():
    """`alexft --help` cut every summary mid-sentence ("files, folders (searched...")."""
    for group in ([], ["weights"]):
        listed = run(*group, "--help").output.split("Commands:\n")[1].split("\n\n")[0].splitlines()  # (examples follow)
        assert len(listed) >= 3 and all(line.strip() and not line.endswith("...") for line in listed), listed


def test_the_shell_completes_commands_and_choices_as_the_docs_say():
    """docs/commands.md: click's completion, `_ALEXFT_COMPLETE=bash_source alexft`; it must not
    start TensorFlow (a completion that took seconds per Tab would be no use)."""
    def complete(*words):
        env = dict(os.environ, COMP_WORDS=" ".join(["alexft", *words]), COMP_CWORD=str(len(words)),
                   _ALEXFT_COMPLETE="bash_complete")
        # (`run` ends the process at once, so what was imported is told by -X importtime)
        done = subprocess.run([sys.executable, "-X", "importtime", "-c", "from alexft.cli import run; run()"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert "| click" in done.stderr and "tensorflow" not in done.stderr
        return [line.partition(",")[2] for line in done.stdout.splitlines()]

    assert {"classify", "evaluate", "features", "finetune", "export", "weights"} <= set(complete(""))
    assert complete("classify", "--runtime", "") == ["auto", "tensorflow", "litert", "openvino"]
    assert complete("evaluate", "--runtime", "") == ["tensorflow", "openvino"]


def test_file_names_that_do_not_print_are_shown_as_a_shell_reads_them_back(tmp_path):
    """A newline had split a result across lines, a byte that is not UTF-8 printed as a
    replacement character: names with either are shown in bash's $'...' quoting, which gives
    back the very bytes."""
    from alexft.cli.predict import shell_quoted

    assert shell_quoted("photos/a cat.jpg") == "photos/a cat.jpg"  # printable names are shown as they are
    for name in ("new\nline.jpg", os.fsdecode(b"lat\xe9.jpg"), "tab\there's.jpg", "back\\slash\x85.png",
                 "bell\x07\U0001f600.jpg"):
        shown = shell_quoted(name)
        assert shown.isprintable() and shown.startswith("$'")
        echoed = subprocess.run(["bash", "-c", f"printf %s {shown}"], capture_output=True, check=True,
                                env=dict(os.environ, LC_ALL="C.UTF-8"))
        assert echoed.stdout == os.fsencode(name), shown


def test_classify_quotes_an_odd_file_name_on_a_terminal_and_writes_it_as_it_is_to_a_pipe(canonical_weights_file,
                                                                                       tmp_path):
    """As `ls` does: a terminal shows what can be pasted back; a pipe gets the name's own bytes."""
    from alexft.cli.predict import shell_quoted

    odd = tmp_path / os.fsdecode(b"new\nline \xe9.png")
    shutil.copy(photo_paths()["chelsea"], odd)
    broken = tmp_path / "bro\tken.png"
    broken.write_bytes(b"not an image")
    command = [sys.executable, "-m", "alexft", "classify", str(odd), str(broken), "--weights",
               str(canonical_weights_file), "--runtime", "tensorflow", "-k", "1"]
    piped = subprocess.run(command, capture_output=True, timeout=600)
    assert piped.returncode == 1
    assert piped.stdout.startswith(os.fsencode(str(odd)) + b"\n")  # the bytes, newline and all
    assert os.fsencode(f"error: {tmp_path}/bro ken.png: not an image") in piped.stderr  # (an error is one line)
    script = f"script -qec {shlex.quote(shlex.join(command))} /dev/null"  # stdout and stderr on a terminal
    on_terminal = subprocess.run(["bash", "-c", script], capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
    shown = on_terminal.stdout.decode("utf-8", "replace").replace("\r\n", "\n")
    assert shown.splitlines()[0] == shell_quoted(str(odd)), shown
    assert f"error: {shell_quoted(str(broken))}: not an image" in shown


def test_a_missing_input_with_a_newline_in_its_name_is_one_line_shown_as_a_result_would_be(tmp_path):
    """The usage error split at the newline: "...: nosuch" and "file.jpg: no such file or folder"."""
    from alexft.cli.predict import shell_quoted

    name = str(tmp_path / "nosuch\nfile.jpg")
    piped = run("classify", name)
    assert piped.exit_code == 2
    assert piped.stderr.splitlines()[-1] == (f"Error: Invalid value for 'INPUTS...': {tmp_path}/nosuch file.jpg: no "
                                             "such file or folder")
    command = shlex.join([sys.executable, "-m", "alexft", "classify", name])
    on_terminal = subprocess.run(["bash", "-c", f"script -qec {shlex.quote(command)} /dev/null"], capture_output=True,
                                 timeout=120, stdin=subprocess.DEVNULL)
    shown = on_terminal.stdout.decode("utf-8", "replace").replace("\r\n", "\n")
    assert shown.splitlines()[-1] == f"Error: Invalid value for 'INPUTS...': {shell_quoted(name)}: no such file or folder"
    spaced = run("classify", str(tmp_path / "a  b.jpg"))  # a name that prints is shown as typed
    assert spaced.stderr.splitlines()[-1].endswith(f"{tmp_path}/a  b.jpg: no such file or folder")


def test_a_bad_runtime_names_the_environment_variable_only_when_it_came_from_there(tmp_path):
    photo = photo_paths()["chelsea"]
    typed = run("classify", photo, "--runtime", "openvin", ALEXFT_RUNTIME="litert")
    assert typed.exit_code == 2
    assert typed.stderr.splitlines()[-1] == ("Error: Invalid value for '--runtime': 'openvin' is not one of 'auto', "
                                             "'tensorflow', 'litert', 'openvino'.")
    from_environment = run("classify", photo, ALEXFT_RUNTIME="bogus")
    assert from_environment.exit_code == 2
    assert "Invalid value for '--runtime' (from $ALEXFT_RUNTIME): 'bogus' is not one of" in from_environment.stderr
