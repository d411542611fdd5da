"""Tests of :mod:`pipeline.io.storage` on a local folder and on ``memory://``.

Every test gets its own location: ``tmp_path`` for local files, a unique ``memory://`` folder
(removed afterwards) for the in-memory filesystem, so tests never see each other's files.
"""

from __future__ import annotations

import pickle
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from pipeline.io.storage import InputFile, Location, is_inside, storable_name

FILES = {
    "z.txt": b"zz",
    "a/b/c.bin": b"\x00" * 5,
    "a/x.bin": b"",
    "a/b/d/deep.json": b"{}" * 10,
    "B.txt": b"upper",
    "a b/space name.png": b"\x89PNG",
}


@pytest.fixture
def memory_url() -> Iterator[str]:
    name = f"test-storage-{uuid.uuid4().hex}"
    yield f"memory://{name}/root"
    fs = fsspec.filesystem("memory")
    if fs.exists(f"/{name}"):
        fs.rm(f"/{name}", recursive=True)
    assert not fs.exists(f"/{name}")


@pytest.fixture(params=["local", "file-url", "memory"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "local":
        return Location(str(tmp_path / "root"))
    if request.param == "file-url":
        return Location(f"file://{tmp_path / 'root'}")
    return Location(request.getfixturevalue("memory_url"))


def write_all(location: Location, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        location.write_bytes(rel, data)


def test_list_files_sorted_posix_with_sizes(location: Location) -> None:
    write_all(location, FILES)
    listed = location.list_files()
    assert [(f.rel, f.size) for f in listed] == sorted((rel, len(d)) for rel, d in FILES.items())
    assert all(isinstance(f, InputFile) for f in listed)
    assert all("\\" not in f.rel and not f.rel.startswith("/") for f in listed)
    assert all(f.version for f in listed)  # a change token from the listing


def test_input_file_name_and_folder(location: Location) -> None:
    write_all(location, FILES)
    by_rel = {f.rel: f for f in location.list_files()}
    assert (by_rel["a/b/c.bin"].name, by_rel["a/b/c.bin"].folder) == ("c.bin", "a/b")
    assert (by_rel["z.txt"].name, by_rel["z.txt"].folder) == ("z.txt", "")


def test_list_files_under_a_folder_keeps_root_relative_paths(location: Location) -> None:
    write_all(location, FILES)
    assert [f.rel for f in location.list_files("a/b")] == ["a/b/c.bin", "a/b/d/deep.json"]
    assert [f.rel for f in location.list_files("a")] == ["a/b/c.bin", "a/b/d/deep.json", "a/x.bin"]


def test_list_files_of_missing_folder_is_empty(location: Location) -> None:
    assert location.list_files() == []
    location.write_bytes("a/one.txt", b"1")
    assert location.list_files("nothing-here") == []


def test_write_bytes_creates_parents_and_read_bytes_round_trips(location: Location) -> None:
    location.write_bytes("deep/er/still/file.bin", b"\x01\x02\x03")
    assert location.exists("deep/er/still/file.bin")
    assert location.read_bytes("deep/er/still/file.bin") == b"\x01\x02\x03"
    assert location.exists()


def test_write_bytes_overwrites(location: Location) -> None:
    location.write_bytes("f.txt", b"first version")
    location.write_bytes("f.txt", b"2nd")
    assert location.read_bytes("f.txt") == b"2nd"
    assert [(f.rel, f.size) for f in location.list_files()] == [("f.txt", 3)]


def test_local_write_bytes_lands_in_the_folder(tmp_path: Path) -> None:
    Location(str(tmp_path / "out")).write_bytes("x/y/z.txt", b"hi")
    assert (tmp_path / "out" / "x" / "y" / "z.txt").read_bytes() == b"hi"


def test_write_bytes_into_a_folder_removed_since_the_last_write(tmp_path: Path) -> None:
    # Folders are made when a write misses them: a folder removed between writes (vacuum,
    # remove_folder, another process) is made again, and so is the output root itself.
    out = Location(str(tmp_path / "out"))
    out.write_bytes("a/b/one.txt", b"1")
    out.remove_folder("a")
    out.write_bytes("a/b/two.txt", b"2")
    assert out.read_bytes("a/b/two.txt") == b"2"
    shutil.rmtree(tmp_path / "out")
    Location(str(tmp_path / "out")).write_bytes("a/b/three.txt", b"3")
    assert [f.rel for f in out.list_files()] == ["a/b/three.txt"]


def test_remove_deletes_only_the_named_files(location: Location) -> None:
    write_all(location, FILES)
    location.remove(["a/b/c.bin", "z.txt"])
    assert not location.exists("a/b/c.bin")
    assert not location.exists("z.txt")
    assert [f.rel for f in location.list_files()] == sorted(set(FILES) - {"a/b/c.bin", "z.txt"})


def test_remove_nothing_is_a_no_op(location: Location) -> None:
    write_all(location, FILES)
    location.remove([])
    location.remove(iter(()))
    assert len(location.list_files()) == len(FILES)


def test_remove_ignores_missing_files(location: Location) -> None:
    # Location.remove documents "Delete files (missing ones are ignored)".
    location.write_bytes("keep.txt", b"k")
    location.write_bytes("gone.txt", b"g")
    location.remove(["gone.txt", "never-existed.txt"])
    assert not location.exists("gone.txt")
    assert [f.rel for f in location.list_files()] == ["keep.txt"]


def test_exists(location: Location) -> None:
    assert not location.exists("f.txt")
    location.write_bytes("f.txt", b"")
    assert location.exists("f.txt")
    assert not location.exists("g.txt")


def test_path_and_url_of(tmp_path: Path, memory_url: str) -> None:
    local = Location(str(tmp_path) + "/")
    assert local.root == str(tmp_path)
    assert local.path("a/b.png") == f"{tmp_path}/a/b.png"
    assert local.path("") == str(tmp_path)
    memory = Location(memory_url + "/")
    assert memory.root == "/" + memory_url.removeprefix("memory://")
    assert memory.url_of("a/b.png") == f"{memory_url}/a/b.png"
    assert memory.url_of("") == memory_url + "/"


def test_location_pickles(memory_url: str) -> None:
    location = Location(memory_url, {"skip_instance_cache": False})
    location.write_bytes("p.txt", b"pickled")
    clone = pickle.loads(pickle.dumps(location))
    assert clone == location
    assert clone.read_bytes("p.txt") == b"pickled"


def test_memory_locations_do_not_see_each_other(memory_url: str) -> None:
    first = Location(memory_url + "/one")
    second = Location(memory_url + "/one-two")
    first.write_bytes("f.txt", b"1")
    second.write_bytes("g.txt", b"2")
    assert [f.rel for f in first.list_files()] == ["f.txt"]
    assert [f.rel for f in second.list_files()] == ["g.txt"]


# ---------------------------------------------------------------------------------------------
# is_inside
# ---------------------------------------------------------------------------------------------


def test_is_inside_local(tmp_path: Path) -> None:
    outer = Location(str(tmp_path / "data"))
    assert is_inside(Location(str(tmp_path / "data" / "out")), outer) == "out"
    assert is_inside(Location(str(tmp_path / "data" / "out" / "x")), outer) == "out/x"
    assert is_inside(Location(str(tmp_path / "data") + "/"), outer) == ""
    assert is_inside(outer, outer) == ""
    assert is_inside(Location(f"file://{tmp_path / 'data' / 'o'}"), outer) == "o"


def test_is_inside_refuses_siblings_with_a_common_prefix(tmp_path: Path) -> None:
    outer = Location(str(tmp_path / "data"))
    assert is_inside(Location(str(tmp_path / "data-out")), outer) is None
    assert is_inside(Location(str(tmp_path / "dat")), outer) is None
    assert is_inside(Location(str(tmp_path)), outer) is None


def test_is_inside_memory_and_across_filesystems(tmp_path: Path, memory_url: str) -> None:
    outer = Location(memory_url)
    assert is_inside(Location(memory_url + "/scaled/x"), outer) == "scaled/x"
    assert is_inside(Location(memory_url + "x"), outer) is None
    # Same path text on another filesystem is not inside.
    local_twin = Location(str(tmp_path / memory_url.removeprefix("memory://") / "inner"))
    assert is_inside(local_twin, outer) is None
    assert is_inside(Location(memory_url + "/inner"), Location(str(tmp_path))) is None


@pytest.mark.parametrize(
    ("listed", "rel"),
    [
        ("a/b_ins_maks.png", "a/b_ins_maks.png"),  # valid names are unchanged
        ("caf\u00e9/\u00ff.json", "caf\u00e9/\u00ff.json"),
        ("bad/\udcffodd.png", "bad/\\xffodd.png"),  # the byte 0xff, as Python lists it
        ("a\udcff\u00e9", "a\\xff\u00e9"),  # an escaped byte beside valid text
        ("x\ud800y", "x\\ud800y"),  # a surrogate that is no escaped byte
    ],
)
def test_names_of_any_bytes_become_valid_text(listed: str, rel: str) -> None:
    assert storable_name(listed) == rel
    rel.encode("utf-8")
    file = InputFile.listed(listed, 1, "v")
    assert (file.rel, file.key) == (rel, listed)
    assert file.stored == (None if rel == listed else listed)


def test_remove_emptied_folders_deletes_only_what_the_removal_left_empty(tmp_path: Path) -> None:
    """Upwards from the removed files: folders left empty go, a folder with anything left
    stays, an empty folder the removal did not touch stays, the location itself stays."""
    root = tmp_path / "root"
    location = Location(str(root))
    write_all(location, FILES)
    (root / "untouched").mkdir()
    gone = ["a/b/c.bin", "a/b/d/deep.json"]
    location.remove(gone)
    location.remove_emptied_folders(gone)
    folders = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}
    assert folders == {"a", "a b", "untouched"}
    assert [f.rel for f in location.list_files()] == sorted(set(FILES) - set(gone))

    location.remove(FILES)
    location.remove_emptied_folders(FILES)
    assert sorted(p.name for p in root.iterdir()) == ["untouched"]
    location.remove_emptied_folders(["untouched/x", "y"])  # the root itself: never
    assert root.is_dir() and not any(root.iterdir())


def test_remove_emptied_folders_asks_an_object_store_nothing(
    memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = Location(memory_url)
    write_all(location, FILES)
    location.remove(["a/b/d/deep.json"])

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("an object store has no folders to remove")

    monkeypatch.setattr(type(location.fs), "rmdir", refused)
    location.remove_emptied_folders(["a/b/d/deep.json"])
