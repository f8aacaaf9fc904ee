from pathlib import Path

from scripts.doc_sections import replace_section


def test_a_section_is_replaced_and_the_rest_of_the_page_kept(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(
        "# Benchmarks\n\nIntro.\n\n<!-- search:start -->\nold table\n<!-- search:end -->\n\n## Later\n\nText.\n",
        encoding="utf-8",
    )
    replace_section(page, "search", "| mode | queries/s |\n")
    assert page.read_text(encoding="utf-8") == (
        "# Benchmarks\n\nIntro.\n\n"
        "<!-- search:start -->\n| mode | queries/s |\n<!-- search:end -->\n\n## Later\n\nText.\n"
    )


def test_markers_are_appended_once_when_missing(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "operations.md"
    replace_section(page, "canary", "first")
    replace_section(page, "canary", "second")
    replace_section(page, "serving", "other")
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n")
    assert text.count("<!-- canary:start -->") == 1 and "first" not in text
    assert "<!-- canary:start -->\nsecond\n<!-- canary:end -->" in text
    assert text.index("canary:end") < text.index("<!-- serving:start -->\nother\n<!-- serving:end -->")
