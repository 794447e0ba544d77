"""The history index of the outputs folder: incremental, newest first, searchable, paged,
persistent across restarts, rebuilt when corrupt, and safe against crafted files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from studio.backend.history import INDEX_DIR, INDEX_FILE, HistoryIndex, Page
from studio.backend.outputs import OutputStore
from studio.backend.requests import RequestError

MODEL = "tiny:base"


def save(store: OutputStore, prompt: str, seed: int, task: str = "txt2img",
         day: str | None = None, age_s: float = 0.0) -> str:
    """Save a small image the way the studio does; optionally move it into another day
    folder and date it `age_s` seconds back. Returns its name relative to the folder."""
    path = store.save(Image.new("RGB", (8, 8), (seed % 256, 0, 0)),
                      {"task": task, "prompt": prompt, "seed": seed}, MODEL)
    if day is not None:
        (store.folder / day).mkdir(exist_ok=True)
        path = path.rename(store.folder / day / path.name)
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    return store.name_of(path)


@pytest.fixture()
def store(tmp_path: Path) -> OutputStore:
    return OutputStore(tmp_path / "outputs")


def history(store: OutputStore, **kw) -> list[dict]:
    return HistoryIndex(store.root).query(Page.checked(**kw))


def test_lists_generated_images_newest_first_with_their_parameters(store):
    old = save(store, "a red circle", 1, day="2024-01-02", age_s=3600)
    new = save(store, "a blue square", 2, task="control", age_s=10)
    store.save_aux(Image.new("L", (8, 8)), "mask")  # an input saved next to them: not an item
    items = history(store)
    assert [i["file"] for i in items] == [new, old]
    assert items[0] == {"file": new, "task": "control", "prompt": "a blue square", "seed": 2,
                        "model": MODEL, "created": items[0]["created"]}
    created = [time.mktime(time.strptime(i["created"][:19], "%Y-%m-%dT%H:%M:%S"))
               for i in items]
    assert created[0] > created[1] and items[0]["created"][19] in "+-Z"  # ISO, with offset
    assert not Path(items[0]["file"]).is_absolute() and "/" in items[0]["file"]


def test_indexes_incrementally_and_drops_deleted_files(store):
    index = HistoryIndex(store.root)
    names = [save(store, f"shape {i}", i, age_s=100 - i) for i in range(5)]
    assert len(index.query(Page())) == 5 and index.metadata_reads == 5
    assert len(index.query(Page())) == 5 and index.metadata_reads == 5  # nothing re-read
    added = save(store, "a green triangle", 9)
    (store.root / names[0]).unlink()
    items = index.query(Page())
    assert index.metadata_reads == 6  # only the new file was read
    assert [i["file"] for i in items][0] == added and names[0] not in [i["file"] for i in items]
    # a whole day folder removed
    save(store, "old", 7, day="2023-05-05", age_s=9999)
    assert len(index.query(Page())) == 6
    for f in (store.root / "2023-05-05").iterdir():
        f.unlink()
    (store.root / "2023-05-05").rmdir()
    assert len(index.query(Page())) == 5


def test_a_file_changed_in_place_is_read_again(store):
    index = HistoryIndex(store.root)
    name = save(store, "a red circle", 1)
    assert index.query(Page())[0]["prompt"] == "a red circle"
    other = store.save(Image.new("RGB", (9, 9)), {"task": "txt2img", "prompt": "a purple square",
                                                  "seed": 3}, MODEL)
    os.replace(other, store.root / name)  # the file under that name is now another image
    assert [i["prompt"] for i in index.query(Page())] == ["a purple square"]


def test_query_matches_prompt_task_and_model_case_insensitively(store):
    save(store, "A Red Circle", 1, age_s=30)
    save(store, "a blue square", 2, task="layout", age_s=20)
    save(store, "a red square", 3, age_s=10)
    prompts = lambda q: [i["prompt"] for i in history(store, query=q)]  # noqa: E731
    assert prompts("red") == ["a red square", "A Red Circle"]
    assert prompts("  SQUARE ") == ["a red square", "a blue square"]
    assert prompts("layout") == ["a blue square"]
    assert len(prompts("tiny:")) == 3  # the model
    assert prompts("circle\x1ftxt2img") == []  # no match across fields
    assert prompts("%") == [] and prompts("_") == []  # no wildcards


def test_pages_through_the_items(store):
    for i in range(7):
        save(store, f"shape {i}", i, age_s=100 - i)
    index = HistoryIndex(store.root)
    seeds = [[i["seed"] for i in index.query(Page(limit=3, offset=o))] for o in (0, 3, 6, 9)]
    assert seeds == [[6, 5, 4], [3, 2, 1], [0], []]
    assert index.count() == 7 and index.count("shape 3") == 1


@pytest.mark.parametrize(("kw", "message"), [
    ({"limit": 0}, "limit must be from 1 to 500"),
    ({"limit": 10_000}, "limit must be from 1 to 500"),
    ({"limit": "ten"}, "limit must be a whole number"),
    ({"limit": 2.5}, "limit must be a whole number"),
    ({"limit": True}, "limit must be a whole number"),
    ({"offset": -1}, "offset must be from 0 to 1000000000"),
    ({"query": "x" * 201}, "query is 201 characters long"),
    ({"query": ["red"]}, "query must be text"),
])
def test_bad_pages_are_refused_with_a_clear_message(kw, message):
    with pytest.raises(RequestError, match=message):
        Page.checked(**kw)


def test_whole_float_limits_are_accepted():
    assert Page.checked(limit=10.0, offset=2.0) == Page(10, "", 2)


def test_survives_a_restart_of_the_studio(fresh_studio, tiny_model_set):
    from studio.backend.service import Studio

    first = fresh_studio.txt2img({"prompt": "a yellow circle", "seed": 5, "steps": 1,
                                  "width": 64, "height": 64})
    assert fresh_studio.history()[0]["file"] == first.info["file"]
    fresh_studio.history_index.close()
    again = Studio(fresh_studio.settings, model_set=tiny_model_set)  # a restart
    items = again.history(limit=1)
    assert items[0]["file"] == first.info["file"] and items[0]["prompt"] == "a yellow circle"
    assert items[0]["seed"] == 5 and items[0]["task"] == "txt2img"
    assert again.history_index.metadata_reads == 0  # the index was kept, not rebuilt
    assert again.history_file(items[0]["file"]) == Path(first.path).resolve()


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong-schema", "folder"])
def test_a_corrupt_index_is_rebuilt(store, damage):
    names = [save(store, f"shape {i}", i, age_s=10 - i) for i in range(3)]
    index = HistoryIndex(store.root)
    assert len(index.query(Page())) == 3
    index.close()
    db = store.root / INDEX_DIR / INDEX_FILE
    if damage == "garbage":
        db.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    elif damage == "empty":
        db.write_bytes(b"")
    elif damage == "wrong-schema":
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema'")
        conn.close()
    else:
        for f in db.parent.iterdir():
            f.unlink()
        db.parent.rmdir()
        db.parent.write_text("not a folder")
    again = HistoryIndex(store.root)
    assert [i["file"] for i in again.query(Page())] == names[::-1]


def test_an_index_damaged_while_open_is_rebuilt(store):
    names = [save(store, f"shape {i}", i, age_s=10 - i) for i in range(2)]
    index = HistoryIndex(store.root)
    index.query(Page())
    index._connect().execute("DROP TABLE files")  # as if the file lost its table
    assert [i["file"] for i in index.query(Page())] == names[::-1]


def crafted_png(path: Path, payload: object, raw: str | None = None) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("studio_request", raw if raw is not None else json.dumps(payload))
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)


def test_crafted_and_broken_pngs_are_skipped_safely(store):
    good = save(store, "a red circle", 1, day="2024-02-02")
    day = store.root / "2024-02-02"
    crafted_png(day / "a-not-json.png", None, raw="{not json")
    crafted_png(day / "b-list.png", [1, 2, 3])
    crafted_png(day / "c-request-list.png", {"request": ["x"]})
    crafted_png(day / "d-types.png", {"request": {"prompt": {"x": 1}, "seed": "1; DROP TABLE",
                                                   "task": ["t"]}, "model": 42})
    crafted_png(day / "e-huge.png", {"request": {"prompt": "p" * 100_000, "seed": 2**70}})
    (day / "f-truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xff")
    (day / "g-not-png.png").write_text("hello")
    os.symlink("/etc/hostname", day / "h-link.png")
    (day / ".tmp-partial.png").write_bytes(b"")
    (store.root / "not-a-day").mkdir()
    crafted_png(store.root / "not-a-day" / "x.png", {"request": {"prompt": "elsewhere"}})
    items = {i["file"]: i for i in history(store, limit=500)}
    assert set(items) == {good, "2024-02-02/d-types.png", "2024-02-02/e-huge.png"}
    assert items["2024-02-02/d-types.png"] | {"created": None} == {
        "file": "2024-02-02/d-types.png", "task": "", "prompt": "", "seed": None, "model": "",
        "created": None}
    assert len(items["2024-02-02/e-huge.png"]["prompt"]) == 4000
    assert items["2024-02-02/e-huge.png"]["seed"] is None


def test_history_file_stays_inside_the_outputs_folder(fresh_studio):
    with pytest.raises(RequestError, match="outside the outputs folder"):
        fresh_studio.history_file("../../etc/passwd")
    with pytest.raises(RequestError, match="outside the outputs folder"):
        fresh_studio.history_file("/etc/passwd")
    with pytest.raises(RequestError, match="no longer in the outputs folder"):
        fresh_studio.history_file("2024-01-01/missing.png")


def test_concurrent_queries_while_images_are_saved(store):
    """One index shared by the server's threads: queries while another thread saves."""
    import threading

    index, errors, done = HistoryIndex(store.root), [], threading.Event()

    def saver() -> None:
        for i in range(30):
            save(store, f"shape {i}", i)
        done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                items = index.query(Page(limit=500))
                assert len({i["file"] for i in items}) == len(items)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=saver), *(threading.Thread(target=reader)
                                                 for _ in range(4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(index.query(Page(limit=500))) == 30
    assert index.metadata_reads == 30  # each file read once, whichever thread saw it first


def test_a_file_added_within_the_same_clock_tick_is_found(store, monkeypatch):
    """A coarse folder timestamp may not move when a file is added right after a listing:
    a folder changed lately is listed again."""
    index = HistoryIndex(store.root)
    first = save(store, "a red circle", 1)
    folder = (store.root / first).parent
    assert len(index.query(Page())) == 1
    stamp = folder.stat().st_mtime_ns
    second = save(store, "a blue square", 2)
    os.utime(folder, ns=(stamp, stamp))  # the folder's mtime did not move
    assert {i["file"] for i in index.query(Page())} == {first, second}
    # once settled, an unchanged folder is not listed again (a file slipped in is not seen)
    monkeypatch.setattr("studio.backend.history.SETTLE_NS", 0)
    index.query(Page())
    third = store.save(Image.new("RGB", (8, 8)), {"task": "txt2img", "seed": 3}, MODEL)
    stamp = folder.stat().st_mtime_ns - 10**9
    os.utime(folder, ns=(stamp, stamp))
    index.query(Page())  # settles at this mtime
    (folder / "extra.png").write_bytes(third.read_bytes())
    os.utime(folder, ns=(stamp, stamp))
    assert "extra.png" not in {Path(i["file"]).name for i in index.query(Page())}
