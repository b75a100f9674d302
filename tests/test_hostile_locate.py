"""Issue 23's hostile probes as a locate session meets them: photos of the library it cannot
search (an unfinished update, lost or damaged stored descriptors) are said, never hidden behind
a plain "Not found"."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest
from _lund import TEST_IMAGE_SIZE

from netvlad_gui.core.config import ExtractConfig, LocateConfig, VerifyConfig
from netvlad_gui.core.query.verdict import LOCATED

FAST = ExtractConfig(image_size=TEST_IMAGE_SIZE, num_workers=0)
GLOBAL_ONLY = LocateConfig(verify=VerifyConfig(enabled=False))  # the GUI's first answer
NAMES = ["02.jpg", "05.jpg", "08.jpg", "11.jpg", "14.jpg"]


@pytest.fixture
def lund_copy(lund_index, tmp_path):
    """A copy of the session's lund index that a test may damage."""
    dst = tmp_path / "idx"
    shutil.copytree(lund_index, dst, ignore=shutil.ignore_patterns("build.lock"))
    return dst


def _requeue(idx, names: list[str]) -> None:
    """What an update killed by SIGTERM after its scan leaves: the changed photos pending, their
    old rows dropped (catalog.upsert_pending), nothing extracted yet."""
    db = sqlite3.connect(idx / "catalog.sqlite")
    with db:
        marks = ",".join("?" * len(names))
        db.execute(f"UPDATE images SET status='pending', row=NULL WHERE path IN ({marks})", names)
    db.close()


# -- probe 7: SIGTERM mid-update ----------------------------------------------------------------
def test_photos_an_unfinished_update_left_unsearchable_are_said(lund_copy, queries, capsys):
    from netvlad_gui.cli import main
    from netvlad_gui.core.library.status import not_searchable_note
    from netvlad_gui.core.query.session import open_session

    where_queries_are = ["01.jpg", "03.jpg", "04.jpg", "06.jpg", "07.jpg", "09.jpg", "10.jpg"]
    where_queries_are += ["12.jpg", "13.jpg", "15.jpg", "16.jpg"]
    _requeue(lund_copy, where_queries_are)
    status, session = open_session(lund_copy, FAST)
    assert status.ready and status.not_searchable == 11
    note = not_searchable_note(status)
    assert note.startswith("11 photos of this library are not searchable yet")
    assert "update the index" in note
    try:
        results = [session.locate(queries / n, GLOBAL_ONLY) for n in NAMES]
    finally:
        session.close()
    missed = [r for r in results if r.verdict != LOCATED]
    assert len(missed) >= 3  # their places are among the photos not searched
    assert all(note in r.verdict_reason for r in missed)  # was: a plain "Not found"

    args = ["locate", str(queries / "08.jpg"), "--index", str(lund_copy), "--no-verify"]
    assert main([*args, "--image-size", str(TEST_IMAGE_SIZE), "-q"]) == 0
    out, err = capsys.readouterr()
    assert note in err  # said once, before the answers, whatever they are
    assert "Located" in out or note in out


def test_a_library_fully_searchable_has_no_note(lund_index):
    from netvlad_gui.core.library.status import not_searchable_note
    from netvlad_gui.core.query.session import open_session

    status, session = open_session(lund_index, FAST)
    session.close()
    assert status.not_searchable == 0 and not_searchable_note(status) == ""


def test_the_library_panel_says_which_photos_are_not_searchable(qtbot):
    from netvlad_gui.core.library.status import LibraryStatus
    from netvlad_gui.ui.librarypanel import LibraryPanel

    panel = LibraryPanel()
    qtbot.addWidget(panel)
    status = LibraryStatus("idx", exists=True, ready=True, indexed=19, with_gps=19)
    panel.set_info(status)
    assert "not searchable" not in panel.stats_label.text()
    status.pending, status.lost = 3, 2
    panel.set_info(status)
    text = panel.stats_label.text()
    assert "3 not indexed yet: click “Update index”" in text
    assert "2 not searchable" in text and "extract them again" in text


# -- probe 1: bit rot, as locate met it ---------------------------------------------------------
def test_a_rotten_row_of_lund_is_left_out_and_said(lund_copy, queries, capsys):
    """Was: all 5 queries "Located", confidence 1.00, 111-168 m off, score 1.9e35."""
    from netvlad_gui.cli import main
    from netvlad_gui.core.library.status import not_searchable_note
    from netvlad_gui.core.query.session import open_session

    path = lund_copy / "descriptors.f32"
    bits = np.fromfile(path, np.uint32)
    dim = path.stat().st_size // 4 // 19
    bits[3 * dim + 100] ^= np.uint32(1 << 30)  # one exponent bit: x 2^128
    bits.tofile(path)
    status, session = open_session(lund_copy, FAST)
    try:
        assert status.damaged == 1 and status.not_searchable == 1
        note = not_searchable_note(status)
        assert note == (
            "1 photo of this library is not searchable yet (its stored descriptor is damaged): "
            "update the index"
        )
        for name in NAMES:
            res = session.locate(queries / name, GLOBAL_ONLY)
            assert all(m.score <= 1.0001 for m in res.matches)
            assert res.verdict != LOCATED or res.error_m < 25, (name, res.error_m)
            assert res.verdict == LOCATED or note in res.verdict_reason
    finally:
        session.close()
    args = ["locate", str(queries / "02.jpg"), "--index", str(lund_copy), "--no-verify", "-q"]
    assert main([*args, "--image-size", str(TEST_IMAGE_SIZE)]) == 0
    assert note in capsys.readouterr().err


# -- the mutation audit: the verifier's reference cache and a changed file -------------------------
@pytest.mark.parametrize("same_size_and_mtime", [False, True], ids=["overwritten", "swapped"])
def test_a_reference_overwritten_by_another_place_loses_its_inliers(
    tmp_path, shared_dir, queries, same_size_and_mtime
):
    """The cache of reference features must not outlive the file: "swapped" keeps the size and
    puts the mtime back, as `cp` + `touch -r` or a sync tool restoring times would."""
    import os

    from netvlad_gui.core.query.verify import Verifier

    lund = shared_dir / "data/lund_street/references/07.jpg"  # 10 m from query 08
    elsewhere = min((shared_dir / "data/gardens_point/day_left").glob("*.jpg"))
    ref = tmp_path / "ref.jpg"
    shutil.copyfile(lund, ref)
    verifier = Verifier(None, FAST, VerifyConfig(features="sift"))
    (before,) = verifier.verify_paths(queries / "08.jpg", [ref])
    assert before.inliers >= 20

    st = ref.stat()
    data = elsewhere.read_bytes()
    if same_size_and_mtime:
        assert len(data) < st.st_size
        data += b"\0" * (st.st_size - len(data))  # after the JPEG's end: decoders ignore it
    ref.write_bytes(data)
    if same_size_and_mtime:
        os.utime(ref, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert (ref.stat().st_size, ref.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    (after,) = verifier.verify_paths(queries / "08.jpg", [ref])
    assert after.inliers < before.inliers / 3, (before.inliers, after.inliers)


# -- probe 5: locate at another image size than the index's -----------------------------------------
def test_locate_describes_photos_at_the_index_size_and_says_so_when_asked_another(
    lund_index, queries, capsys
):
    """Was: `locate --image-size 160` on an index made at another size turned 5/5 Located into
    Not found (a 160 px descriptor of a photo is at cosine 0.15 to its 640 px one)."""
    from netvlad_gui.cli import main
    from netvlad_gui.core.query.session import open_session

    asked = ExtractConfig.from_options(image_size=160, num_workers=0)
    status, session = open_session(lund_index, asked)
    try:
        assert status.image_size == TEST_IMAGE_SIZE
        assert session.locator.extract_cfg.image_size == TEST_IMAGE_SIZE
        (note,) = status.notes
        assert f"at {TEST_IMAGE_SIZE} px" in note and "not at the 160 px asked for" in note
        assert [session.locate(queries / n).verdict for n in NAMES] == [LOCATED] * 5
    finally:
        session.close()
    status, session = open_session(lund_index, ExtractConfig.from_options(num_workers=0))
    session.close()
    assert status.notes == []  # nothing asked: the index's size, nothing to say

    args = ["locate", str(queries / "05.jpg"), "--index", str(lund_index), "--no-verify", "-q"]
    assert main([*args, "--image-size", "160"]) == 0
    out, err = capsys.readouterr()
    assert note in err and "Located" in out
