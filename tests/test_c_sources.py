"""deploy/c/ (the C the exporter writes, as files) and the docs site's docstring extension.

The generated C itself is checked by tests/test_deploy.py (host and QEMU); here: templates are filled
exactly or refused, every file of deploy/c/ is package data, and bracket pairs in docstrings stay text.
"""

from __future__ import annotations

import fnmatch
import sys
import tomllib
from pathlib import Path

import pytest

from deploy.export_c import _PLACEHOLDER, c_source, fill_template

ROOT = Path(__file__).resolve().parents[1]


def test_fill_template_fills_every_placeholder_once():
    text = fill_template("policy.h.in", KIND="MLPEncoder", METHOD="int8", BITS=8, MACS=123, LAYOUT_DOC=" * x\n",
                         OBS_DIM=40, ACT_DIM=4, NUM_NEIGHBORS=2, FALLBACK_ACTION="0.0f")
    assert "#define POLICY_OBS_DIM 40\n" in text and "weights int8 8-bit, 123 multiply-accumulates" in text
    assert _PLACEHOLDER.search(text) is None


def test_fill_template_refuses_missing_and_unknown_values():
    with pytest.raises(ValueError, match="OBS_DIM"):
        fill_template("policy.h.in", KIND="k", METHOD="m", BITS=1, MACS=1, LAYOUT_DOC="", ACT_DIM=4,
                      NUM_NEIGHBORS=0, FALLBACK_ACTION="0.0f")
    with pytest.raises(ValueError, match="EXTRA"):
        fill_template("link.ld", EXTRA=1)


def test_filled_values_are_not_scanned_again():
    """A value that looks like a placeholder is written as it is (one pass)."""
    text = fill_template("kernels.c.in", LINEAR_KERNELS="/* @T@ */\n")
    assert "/* @T@ */" in text


def test_every_c_file_is_package_data():
    """A non-editable install must ship every file the exporter reads (pyproject package-data of deploy)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["deploy"]
    files = sorted(p.name for p in (ROOT / "deploy" / "c").iterdir() if p.suffix != ".md")
    assert files and all(any(fnmatch.fnmatch(f"c/{name}", pat) for pat in patterns) for name in files)
    for name in files:
        assert c_source(name) == (ROOT / "deploy" / "c" / name).read_text()


def test_docstring_brackets_stay_text():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from griffe_plaintext import escape_reference_pairs
    finally:
        sys.path.remove(str(ROOT / "docs"))
    assert escape_reference_pairs("w [out, K][index] and [--a A] [--b B]") == r"w [out, K]\[index] and [--a A] \[--b B]"
    assert escape_reference_pairs("``books[i][j]`` x") == "``books[i][j]`` x"  # code span: untouched
    assert escape_reference_pairs("    y = a[0][1]") == "    y = a[0][1]"  # indented code: untouched
