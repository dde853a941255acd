"""beam_pipelines.ingest.fma_metadata on FMA-shaped fixtures: tracks.csv, fma_metadata.zip, archive member names."""

import csv
import io
import zipfile

import pytest

from beam_pipelines.ingest import fma_metadata as fma

from fma_fixture import (
    member_name,
    mp3_bytes,
    tracks_csv_text,
    write_fma_zip,
    write_metadata_zip,
    write_tracks_csv,
)

TRACKS = [
    {"track_id": 2, "genre_top": "Hip-Hop", "split": "training", "subset": "small"},
    {"track_id": 3, "genre_top": "Hip-Hop", "split": "validation", "subset": "medium"},
    {"track_id": 5, "genre_top": "", "split": "test", "subset": "large"},  # no genre
    {"track_id": 10, "genre_top": "Pop", "split": "test", "subset": "small",
     "bio": 'Line one, with "quotes",\nline two,\n\nand a blank line.'},
    {"track_id": 134, "genre_top": "Rock", "split": "training", "subset": "medium",
     "title": "Commas, and\nnewlines in a title"},
    {"track_id": 155066, "genre_top": "", "split": "validation", "subset": "large"},
]


def expected(tracks):
    return {t["track_id"]: fma.FmaTrack(t["track_id"], t["genre_top"], t["split"],
                                        t["subset"]) for t in tracks}


def read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return fma.read_tracks_csv(f, str(path))


# --------------------------------------------------------------------------------------
# tracks.csv


def test_fixture_has_the_real_layout():
    text = tracks_csv_text(TRACKS)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "" and rows[1][0] == "" and rows[2][0] == "track_id"
    assert not any(rows[2][1:])
    assert ("set", "split") in zip(rows[0], rows[1])
    # Quoted fields hold newlines: more lines than rows, so a line-based reader would fail.
    assert len(text.splitlines()) > len(rows)


def test_read_tracks_csv_parses_the_fixture(tmp_path):
    path = write_tracks_csv(tmp_path / "tracks.csv", TRACKS)
    assert read(path) == expected(TRACKS)


def test_read_tracks_csv_finds_columns_by_name_not_position(tmp_path):
    # Columns in another order, an unknown extra column, no `track_id,,,` row.
    cols = [("track", "genre_top"), ("extra", "thing"), ("set", "subset"), ("set", "split")]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([""] + [c[0] for c in cols])
    w.writerow([""] + [c[1] for c in cols])
    for t in TRACKS:
        w.writerow([t["track_id"], t["genre_top"], "x, y\nz", t["subset"], t["split"]])
    out.seek(0)
    assert fma.read_tracks_csv(out, "reordered.csv") == expected(TRACKS)


def test_not_a_tracks_csv_is_named(tmp_path):
    path = tmp_path / "genres.csv"
    path.write_text("genre_id,#tracks,parent,title,top_level\n21,100,0,Hip-Hop,21\n")
    with pytest.raises(ValueError, match=f"{path}: not an FMA tracks.csv: .*set/split"):
        read(path)


@pytest.mark.parametrize("bad,problem", [
    ("abc", r"track id 'abc' is not"), ("2.5", r"track id '2.5' is not"),
    ("", r"track id '' is not")])
def test_a_bad_track_id_names_its_row(tmp_path, bad, problem):
    rows = list(csv.reader(io.StringIO(tracks_csv_text(TRACKS[:3]), newline="")))
    rows[5][0] = bad  # the third track (rows 1-3 are the header), row 6 of the file
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path = tmp_path / "tracks.csv"
    path.write_text(out.getvalue())
    with pytest.raises(ValueError, match=rf"{path}: row 6 \(line \d+\): {problem}"):
        read(path)


def test_a_track_listed_twice_is_an_error(tmp_path):
    path = write_tracks_csv(tmp_path / "tracks.csv", TRACKS + [TRACKS[1]])
    with pytest.raises(ValueError, match=r"row 10 .*track 3 is listed twice \(first at row 5 "):
        read(path)


def test_an_unknown_split_is_an_error(tmp_path):
    path = write_tracks_csv(tmp_path / "tracks.csv", [dict(TRACKS[0], split="holdout")])
    with pytest.raises(ValueError, match=r"row 4 .*split 'holdout'"):
        read(path)


def test_a_truncated_row_is_an_error(tmp_path):
    path = tmp_path / "tracks.csv"
    path.write_text(tracks_csv_text(TRACKS[:1]) + "7,0,2008\n")
    with pytest.raises(ValueError, match=r"row 5 .*has 3 fields"):
        read(path)


# --------------------------------------------------------------------------------------
# load_metadata


def test_load_metadata_from_csv_and_from_zip_agree(tmp_path):
    csv_path = write_tracks_csv(tmp_path / "tracks.csv", TRACKS)
    zip_path = write_metadata_zip(tmp_path / "fma_metadata.zip", TRACKS)
    with zipfile.ZipFile(zip_path) as zf:
        assert "fma_metadata/tracks.csv" in zf.namelist()
        assert "fma_metadata/genres.csv" in zf.namelist()
    assert fma.load_metadata(csv_path) == expected(TRACKS)
    assert fma.load_metadata(zip_path) == expected(TRACKS)


def test_load_metadata_finds_tracks_csv_at_any_depth_in_a_zip_of_any_name(tmp_path):
    path = tmp_path / "meta.bin"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/b/c/genres.csv", "genre_id\n")
        zf.writestr("a/b/c/tracks.csv", tracks_csv_text(TRACKS[:2]))
    assert fma.load_metadata(str(path)) == expected(TRACKS[:2])


def test_load_metadata_zip_without_tracks_csv(tmp_path):
    path = tmp_path / "fma_metadata.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fma_metadata/genres.csv", "genre_id\n")
        zf.writestr("fma_metadata/not_tracks.csv", "x\n")
    with pytest.raises(ValueError, match=f"{path}: the zip holds no tracks.csv"):
        fma.load_metadata(str(path))


def test_load_metadata_zip_with_two_tracks_csv_is_ambiguous(tmp_path):
    path = tmp_path / "both.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/tracks.csv", tracks_csv_text(TRACKS[:1]))
        zf.writestr("b/tracks.csv", tracks_csv_text(TRACKS[1:2]))
    with pytest.raises(ValueError, match=f"{path}: .*several tracks.csv.*a/tracks.csv"):
        fma.load_metadata(str(path))


def test_load_metadata_damaged_zip(tmp_path):
    good = write_metadata_zip(tmp_path / "good.zip", TRACKS)
    path = tmp_path / "fma_metadata.zip"
    path.write_bytes(open(good, "rb").read()[:200])  # cut short: no central directory
    with pytest.raises(ValueError, match=f"{path}: a damaged or unsupported zip"):
        fma.load_metadata(str(path))


def test_load_metadata_errors_inside_a_zip_name_the_member(tmp_path):
    path = tmp_path / "fma_metadata.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fma_metadata/tracks.csv", "a,b\nc,d\n")
    with pytest.raises(ValueError, match=r"fma_metadata\.zip \(member fma_metadata/tracks"
                                         r"\.csv\): not an FMA tracks\.csv"):
        fma.load_metadata(str(path))


def test_load_metadata_missing_file(tmp_path):
    path = tmp_path / "nope" / "tracks.csv"
    with pytest.raises(ValueError, match=f"{path}: no such file"):
        fma.load_metadata(str(path))


# --------------------------------------------------------------------------------------
# Archive members


@pytest.mark.parametrize("name,track_id", [
    ("fma_small/000/000002.mp3", 2),
    ("fma_full/155/155066.mp3", 155066),
    ("fma_large/099/099999.MP3", 99999),
    ("000/000010.Mp3", 10),
    ("fma_small/000/000002.mp3/", None),  # a folder
    ("fma_small/001/000002.mp3", None),  # folder does not match the id
    ("fma_small/000/00002.mp3", None),  # five digits
    ("fma_small/000/0000002.mp3", None),  # seven digits
    ("fma_small/000/000002.wav", None),
    ("fma_small/000/00000a.mp3", None),
    ("fma_small/000002.mp3", None),  # no id folder
    ("fma_small/README.txt", None),
    ("fma_small/checksums", None),
    ("fma_small/", None),
])
def test_track_id_from_member(name, track_id):
    assert fma.track_id_from_member(name) == track_id


def test_fixture_archive_members_parse_back_to_their_ids(tmp_path):
    ids = [2, 5, 140, 155066]
    path = write_fma_zip(tmp_path / "fma_small.zip", "small", {t: mp3_bytes(0.2) for t in ids},
                         extra_members={"fma_small/000/broken.mp3": b"junk"})
    with zipfile.ZipFile(path) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        names = [i.filename for i in infos]
        assert {"fma_small/README.txt", "fma_small/checksums"} <= set(names)
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
        checksums = zf.read("fma_small/checksums").decode().splitlines()
    assert member_name("small", 155066) in names
    assert sorted(t for t in map(fma.track_id_from_member, names) if t is not None) == ids
    assert len(checksums) == len(ids)


# --------------------------------------------------------------------------------------
# expected_tracks


META = expected(TRACKS) | {7: fma.FmaTrack(7, "", "", "")}  # a track with no subset
SMALL = {t["track_id"] for t in TRACKS if t["subset"] == "small"}
MEDIUM = SMALL | {t["track_id"] for t in TRACKS if t["subset"] == "medium"}


@pytest.mark.parametrize("present,want", [
    ({2}, SMALL),  # an fma_small archive
    ({2, 10}, SMALL),
    ({2, 134}, MEDIUM),  # a medium track present: the archive is fma_medium
    ({3}, MEDIUM),
    ({2, 5}, set(META)),  # large: every track, those without a subset too
    ({2, 999_999}, SMALL),  # tracks the metadata lacks do not count
    ({999_999}, set()),
    (set(), set()),
])
def test_expected_tracks(present, want):
    assert fma.expected_tracks(META, present) == want
    assert SMALL < MEDIUM < set(META)  # the cases above really differ
