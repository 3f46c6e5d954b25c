"""Round four of trying the project as a new user would: no user file is ever replaced by an output flag."""

import pytest
from helpers import load_script, random_image


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    random_image((24, 16)).save(path, format="JPEG")
    return path


# (script, its flags with PHOTO for the user's photo and DIR for a folder, what the refusal says); each is refused
# before any model or data loads, so a model that does not exist is never reached
CASES = [
    ("predict", ["--model", "nothing", "--json", "PHOTO", "PHOTO"], "--json PHOTO is one of this command's inputs"),
    ("evaluate_model", ["--model", "nothing", "--plot", "PHOTO"], "--plot PHOTO exists and is not a .png file"),
    ("evaluate_model", ["--model", "nothing", "--json", "DIR"], "--json DIR is a folder"),
    ("evaluate_model", ["--model", "nothing", "--top_losses", "4", "--top_losses_plot", "PHOTO/grid.png"],
     "PHOTO is a file, not a folder"),
    ("lr_find", ["--plot", "PHOTO"], "--plot PHOTO exists and is not a .png file"),
    ("compare_runs", ["--plot", "PHOTO/curves.png"], "PHOTO is a file, not a folder"),
    ("attention_maps", ["--model", "nothing", "--out_dir", "PHOTO", "PHOTO"], "--out_dir PHOTO is a file"),
    ("inspect_data", ["--json", "PHOTO"], "--json PHOTO exists and is not a .json file"),
]


@pytest.mark.parametrize("script, flags, words", CASES, ids=[f"{case[0]}-{case[2][:20]}" for case in CASES])
def test_an_output_flag_never_replaces_a_users_file(tmp_path, photo, capsys, script, flags, words):
    before = photo.read_bytes()

    def place(text: str) -> str:
        return text.replace("PHOTO", str(photo)).replace("DIR", str(tmp_path))

    assert load_script(script).main([place(flag) for flag in flags]) == 2
    assert place(words) in capsys.readouterr().err
    assert photo.read_bytes() == before
