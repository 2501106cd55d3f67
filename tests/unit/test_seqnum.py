"""Sequence-number arithmetic modulo 2**32, especially across the wrap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from slirpy.tcpip.seqnum import seq_add, seq_between, seq_ge, seq_gt, seq_le, seq_lt, seq_sub

SETTINGS = settings(database=None, deadline=None, max_examples=400)
TOP = 2**32 - 1
u32 = st.integers(0, TOP)


def test_add_wraps():
    assert seq_add(TOP, 1) == 0
    assert seq_add(TOP - 9, 20) == 10
    assert seq_add(5, -10) == 2**32 - 5
    assert seq_add(0, 2**32) == 0


def test_sub_across_wrap():
    assert seq_sub(10, TOP - 9) == 20
    assert seq_sub(TOP - 9, 10) == -20
    assert seq_sub(0, TOP) == 1
    assert seq_sub(7, 7) == 0
    assert seq_sub(2**31, 0) == -(2**31)    # the edge of the range [-2**31, 2**31)
    assert seq_sub(2**31 - 1, 0) == 2**31 - 1


@pytest.mark.parametrize("a,b", [(TOP, 0), (TOP - 100, 100), (2**32 - 2**30, 2**29), (0, 1), (5, 2**31 + 4)])
def test_ordering_across_wrap(a, b):
    assert seq_lt(a, b) and seq_le(a, b)
    assert seq_gt(b, a) and seq_ge(b, a)
    assert not seq_lt(b, a) and not seq_le(b, a)
    assert not seq_gt(a, b) and not seq_ge(a, b)


def test_equal():
    for a in (0, 1, 2**31, TOP):
        assert not seq_lt(a, a) and not seq_gt(a, a)
        assert seq_le(a, a) and seq_ge(a, a)


def test_between_across_wrap():
    low, high = TOP - 5, 10   # window [2**32-6, 10) straddles zero
    assert seq_between(low, low, high)
    assert seq_between(low, TOP, high)
    assert seq_between(low, 0, high)
    assert seq_between(low, 9, high)
    assert not seq_between(low, 10, high)
    assert not seq_between(low, low - 1, high)
    assert not seq_between(low, 2**31, high)
    assert not seq_between(7, 7, 7)        # empty window holds nothing


@SETTINGS
@given(u32, st.integers(-(2**31) + 1, 2**31 - 1))
def test_add_sub_inverse(a, n):
    b = seq_add(a, n)
    assert seq_sub(b, a) == n
    assert seq_lt(a, b) == (n > 0)
    assert seq_le(a, b) == (n >= 0)
    assert seq_gt(a, b) == (n < 0)


@SETTINGS
@given(u32, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_between_matches_offsets(low, size, off):
    high = seq_add(low, size)
    x = seq_add(low, off)
    assert seq_between(low, x, high) == (off < size)
