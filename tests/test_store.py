"""The descriptor store: durable appends, a killed run's tail dropped, scattered reads."""

from __future__ import annotations

import numpy as np
import pytest

from netvlad_gui.core.library.store import PREFETCH_MAX, DescriptorStore


def test_scattered_reads_return_the_rows_asked_for_in_order(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((300, 16)).astype(np.float32)
    store = DescriptorStore(tmp_path / "d.f32", 16, 0)
    store.append(data[:100])
    store.append(data[100:])
    rows = np.array([299, 3, 3, 150, 0, 42])  # unsorted, repeated: prefetched, then gathered
    assert len(rows) <= PREFETCH_MAX
    assert np.array_equal(store.read(rows), data[rows])
    many = rng.integers(0, 300, PREFETCH_MAX + 1)  # past the prefetch limit: plain reads
    assert np.array_equal(store.read(many), data[many])
    assert store.read([]).shape == (0, 16)


def test_a_killed_runs_uncommitted_tail_is_dropped(tmp_path):
    data = np.ones((5, 8), np.float32)
    path = tmp_path / "d.f32"
    DescriptorStore(path, 8, 0).append(data)
    store = DescriptorStore(path, 8, 3)  # the catalogue committed 3 rows
    assert store.rows == 3 and path.stat().st_size == 3 * 8 * 4
    with pytest.raises(RuntimeError, match="shorter than its catalogue"):
        DescriptorStore(path, 8, 4)
