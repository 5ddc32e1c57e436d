"""Sources beyond single files: text folders (with HTML), saved Hugging Face datasets, hub ids, and the
recipe loader's resolution of such paths."""

from __future__ import annotations

import json
import shutil
import sys
import tracemalloc
from pathlib import Path

import pytest
import yaml

from honed.config.load import load_recipe
from honed.data.sources import html_to_text, is_hub_id, read_rows
from honed.errors import DataError

ROWS = [{"prompt": f"question {i}", "completion": f"answer {i}", "n": i} for i in range(10)]


@pytest.fixture(scope="module")
def datasets():
    """The real `datasets` library, quiet; tests that need it are skipped without it."""
    module = pytest.importorskip("datasets")
    module.disable_progress_bars()
    return module


def _fields(folder: Path | str) -> list[dict]:
    rows = list(read_rows(folder))
    assert all(r.error is None for r in rows)
    return [r.row for r in rows]


# --- text folders ---------------------------------------------------------------------------------------


def _text_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "b" / "deeper").mkdir(parents=True)
    (folder / "a.txt").write_text("plain text\nsecond line\n", encoding="utf-8")
    (folder / "b" / "notes.md").write_text("# Title\n\nSome *markdown*.", encoding="utf-8")
    (folder / "b" / "deeper" / "page.html").write_text("<p>Hello &amp; welcome</p>", encoding="utf-8")
    (folder / "b" / "empty.txt").write_text("", encoding="utf-8")
    (folder / "b" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "skip.txt").write_text("never read", encoding="utf-8")
    return folder


def test_text_folder_yields_one_row_per_file_in_sorted_order(tmp_path: Path) -> None:
    folder = _text_folder(tmp_path)
    rows = list(read_rows(folder))
    assert [r.location for r in rows] == [
        f"{folder / 'a.txt'}:1",
        f"{folder / 'b' / 'deeper' / 'page.html'}:1",
        f"{folder / 'b' / 'empty.txt'}:1",
        f"{folder / 'b' / 'latin1.txt'}:1",
        f"{folder / 'b' / 'notes.md'}:1",
    ]
    assert rows[0].row == {"text": "plain text\nsecond line\n", "source": "a.txt"}
    assert rows[1].row == {"text": "Hello & welcome", "source": "b/deeper/page.html"}
    assert rows[2].row == {"text": "", "source": "b/empty.txt"}  # cleaning decides to drop it
    assert rows[3].row is None
    assert rows[3].error == "not valid UTF-8 (byte 0xe9 at offset 3); re-encode the file as UTF-8"
    assert rows[4].row == {"text": "# Title\n\nSome *markdown*.", "source": "b/notes.md"}


def test_text_folder_normalizes_line_endings_and_drops_a_bom(tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_bytes("\ufeffone\r\ntwo\rthree".encode())
    assert _fields(tmp_path) == [{"text": "one\ntwo\nthree", "source": "w.txt"}]


def test_folder_without_text_files_names_the_suffixes(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(
        DataError, match=r"no text files found; .* \.txt, \.md, \.markdown, \.html, \.htm"
    ) as info:
        read_rows(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")


def test_html_becomes_visible_text() -> None:
    markup = (
        "<html><head><title>Not shown</title><style>p {color: red}</style></head><body>"
        "<script>alert('no')</script><h1>Heading</h1><p>First   paragraph\n with  &lt;tags&gt; &eacute;</p>"
        "<p>Second<br>line</p><ul><li>one</li><li>two</li></ul>"
        "<pre>  keep\n    indentation  &amp; all</pre><div>after <b>bold</b> text</div></body></html>"
    )
    assert html_to_text(markup) == (
        "Heading\nFirst paragraph with <tags> é\nSecond\nline\none\ntwo\n"
        "  keep\n    indentation  & all\nafter bold text"
    )


def test_html_self_closing_break_and_table_cells() -> None:
    assert html_to_text("a<br/>b<table><tr><td>x</td><td>y</td></tr></table>") == "a\nb\nx y"


def test_a_single_text_file_is_still_unsupported_and_the_message_names_folders(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'; .* a folder of \.txt/\.md"):
        read_rows(path)


# --- saved Hugging Face datasets -----------------------------------------------------------------------


def test_saved_dataset_reads_back_equal(tmp_path: Path, datasets) -> None:
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    rows = list(read_rows(folder))
    assert [r.row for r in rows] == ROWS
    assert [r.location for r in rows[:2]] == [f"{folder}:1", f"{folder}:2"]


def test_saved_dataset_shards_keep_their_order(tmp_path: Path, datasets) -> None:
    folder = tmp_path / "sharded"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder), num_shards=3)
    assert len(list(folder.glob("data-*.arrow"))) == 3
    rows = list(read_rows(folder))
    assert [r.row for r in rows] == ROWS
    assert rows[-1].location == f"{folder}:10"


def _dataset_dict(tmp_path: Path, datasets, splits: tuple[str, ...] = ("train", "validation")) -> Path:
    folder = tmp_path / "dict"
    parts = {name: datasets.Dataset.from_list(ROWS[i * 3 : i * 3 + 3]) for i, name in enumerate(splits)}
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    return folder


def test_dataset_dict_reads_train_by_default_and_a_split_by_suffix(tmp_path: Path, datasets) -> None:
    folder = _dataset_dict(tmp_path, datasets)
    assert _fields(folder) == ROWS[:3]
    rows = list(read_rows(f"{folder}:validation"))
    assert [r.row for r in rows] == ROWS[3:6]
    assert rows[0].location == f"{folder / 'validation'}:1"


def test_dataset_dict_unknown_or_missing_split_lists_the_splits(tmp_path: Path, datasets) -> None:
    folder = _dataset_dict(tmp_path, datasets)
    with pytest.raises(
        DataError, match=r"no split 'test' .* splits are train, validation, chosen as folder:split"
    ):
        read_rows(f"{folder}:test")
    no_train = _dataset_dict(tmp_path / "other", datasets, splits=("dev", "test"))
    with pytest.raises(DataError, match=rf"no 'train' split; choose one of dev, test .* e.g. {no_train}:dev"):
        read_rows(no_train)


def test_split_suffix_on_a_folder_that_is_not_a_dataset_dict(tmp_path: Path, datasets) -> None:
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    with pytest.raises(DataError, match="has no dataset_dict.json; give .* without it"):
        read_rows(f"{folder}:validation")


def test_missing_shard_is_reported_at_open(tmp_path: Path, datasets) -> None:
    folder = tmp_path / "sharded"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder), num_shards=2)
    (folder / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(DataError, match=r"data-00001-of-00002\.arrow: listed in .*state\.json but missing"):
        read_rows(folder)


@pytest.fixture(scope="module")
def big_saved(tmp_path_factory, datasets) -> Path:
    """200k rows in one Arrow shard (stored as 1000-row record batches)."""
    folder = tmp_path_factory.mktemp("big") / "saved"
    count = 200_000
    data = {"text": [f"row {i} with some words in it" for i in range(count)], "n": list(range(count))}
    datasets.Dataset.from_dict(data).save_to_disk(str(folder))
    return folder


def test_saved_dataset_is_streamed_not_loaded(tmp_path: Path, big_saved: Path) -> None:
    # Cut the shard in half: a reader that loads everything up front fails before the first row, a
    # streaming one yields the intact batches and fails only when it reaches the cut.
    folder = tmp_path / "cut"
    shutil.copytree(big_saved, folder)
    shard = next(folder.glob("data-*.arrow"))
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size // 2)
    rows = read_rows(folder)
    assert next(rows).row == {"text": "row 0 with some words in it", "n": 0}
    with pytest.raises(DataError, match=rf"{shard.name}: not a readable Arrow stream file"):
        for _ in rows:
            pass


def test_saved_dataset_rows_do_not_pile_up_in_python_memory(big_saved: Path) -> None:
    # Turning all 200k rows into dicts at once would allocate tens of MB; batch by batch stays well under 2.
    tracemalloc.start()
    try:
        rows = read_rows(big_saved)
        for _ in range(20_000):
            source = next(rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert source.row == {"text": "row 19999 with some words in it", "n": 19_999}
    assert peak < 2_000_000


# --- hub ids --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("HuggingFaceH4/no_robots", True),
        ("owner/name:validation", True),
        ("owner/my.data-set_v2", True),
        ("no_slash", False),
        ("/absolute/path", False),
        ("owner/name/extra", False),
        ("./owner/name", False),
        ("owner/name:two words", False),
        ("data/train.jsonl", False),  # a missing file, reported as such rather than looked up on the hub
    ],
)
def test_is_hub_id(value: str, expected: bool) -> None:
    assert is_hub_id(value) is expected


def test_an_existing_local_path_is_never_a_hub_id(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.jsonl").write_text('{"x": 1}\n', encoding="utf-8")
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not is_hub_id("a/b.jsonl")
    assert not is_hub_id("owner/name")
    assert not is_hub_id("owner/name:validation")  # a split of a local folder
    assert _fields("a/b.jsonl") == [{"x": 1}]


def test_hub_id_streams_through_load_dataset(tmp_path: Path, monkeypatch, datasets) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ROWS[:4]), encoding="utf-8")
    real_load = datasets.load_dataset
    calls = []

    def fake_load(repo, split=None, streaming=False):
        calls.append((repo, split, streaming))
        return real_load("json", data_files=str(data), split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = list(read_rows("owner/name:validation"))
    assert calls == [("owner/name", "validation", True)]
    assert [r.row for r in rows] == ROWS[:4]
    assert [r.location for r in rows[:2]] == ["owner/name:validation:1", "owner/name:validation:2"]
    list(read_rows("owner/name"))
    assert calls[-1] == ("owner/name", "train", True)


def test_hub_dataset_not_found_says_how_to_work_offline(monkeypatch, datasets) -> None:
    def not_found(repo, split=None, streaming=False):
        raise ConnectionError(f"Couldn't reach '{repo}' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", not_found)
    with pytest.raises(DataError) as info:
        read_rows("owner/missing:test")
    message = str(info.value)
    assert message.startswith("owner/missing:test: cannot load the Hugging Face dataset 'owner/missing'")
    assert "(split 'test'): ConnectionError: Couldn't reach 'owner/missing'" in message
    assert "save_to_disk(FOLDER) and give FOLDER instead" in message
    assert "more detail" not in message


def test_hub_error_when_streaming_starts_is_a_data_error(monkeypatch, datasets) -> None:
    class Unreachable:
        def __iter__(self):
            raise OSError("offline mode is enabled")

    monkeypatch.setattr(datasets, "load_dataset", lambda repo, split=None, streaming=False: Unreachable())
    rows = read_rows("owner/name")
    with pytest.raises(DataError, match=r"owner/name: cannot load .* OSError: offline mode is enabled"):
        next(rows)


def test_hub_id_without_datasets_installed_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(
        DataError, match=r"needs the `datasets` package; install it with pip install 'honed\[hf\]'"
    ):
        read_rows("HuggingFaceH4/no_robots")


def test_missing_local_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file not found; use one of \.jsonl"):
        read_rows(tmp_path / "nothing" / "here")


# --- recipe paths ---------------------------------------------------------------------------------------


def _recipe(folder: Path, data: dict, **sections) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({"data": data, **sections}), encoding="utf-8")
    return path


def test_recipe_keeps_hub_ids(tmp_path: Path) -> None:
    path = _recipe(
        tmp_path / "recipes", {"train": "HuggingFaceH4/no_robots", "validation": "owner/name:test"}
    )
    recipe = load_recipe(path)
    assert recipe.data.train == "HuggingFaceH4/no_robots"
    assert recipe.data.validation == "owner/name:test"


def test_recipe_resolves_a_relative_saved_split_and_leakage_files(tmp_path: Path, datasets) -> None:
    saved = _dataset_dict(tmp_path / "data", datasets)
    (tmp_path / "data" / "bench.jsonl").write_text('{"x": 1}\n', encoding="utf-8")
    against = ["../data/bench.jsonl", "owner/benchmark:test", str(tmp_path / "abs.jsonl")]
    path = _recipe(
        tmp_path / "recipes",
        {"train": "../data/dict", "validation": "../data/dict:validation"},
        prepare={"leakage": {"against": against}},
    )
    recipe = load_recipe(path)
    assert recipe.data.train == str(saved.resolve())
    assert recipe.data.validation == f"{saved.resolve()}:validation"
    assert recipe.prepare.leakage.against == [
        str((tmp_path / "data" / "bench.jsonl").resolve()),
        "owner/benchmark:test",
        str(tmp_path / "abs.jsonl"),
    ]
    assert _fields(recipe.data.validation) == ROWS[3:6]


def test_recipe_resolves_a_missing_relative_file_to_an_absolute_path(tmp_path: Path) -> None:
    path = _recipe(tmp_path / "recipes", {"train": "data/train.jsonl", "validation": "data/v.jsonl"})
    assert load_recipe(path).data.train == str((tmp_path / "recipes" / "data" / "train.jsonl").resolve())
