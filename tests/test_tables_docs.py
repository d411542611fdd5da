"""The schema documentation is generated from the code, and the written tables follow it."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipeline.cli import main
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.tables import COLUMN_MEANINGS, ROW_MEANING, SCHEMAS, TABLES, schema_markdown

DOCS = Path(__file__).parent.parent / "docs" / "tables.md"


def test_docs_equal_the_generated_schemas() -> None:
    assert DOCS.read_text() == schema_markdown(), "run: mask-pipeline schema > docs/tables.md"


def test_every_table_is_described() -> None:
    assert set(ROW_MEANING) == set(SCHEMAS) == set(TABLES)


def test_every_column_has_a_meaning() -> None:
    for table, schema in SCHEMAS.items():
        assert list(COLUMN_MEANINGS[table]) == schema.names, table
        assert all(meaning.strip() for meaning in COLUMN_MEANINGS[table].values()), table


def test_written_parts_carry_exactly_the_documented_schema(tmp_path: Path) -> None:
    tree = make_celantur_tree(tmp_path / "in", seed=2, images=3)
    assert main(["celantur", str(tree.root), str(tmp_path / "out"), "--scheduler", "sync"]) == 0
    for table in TABLES:
        parts = sorted((tmp_path / "out" / table).glob("*.parquet"))
        assert parts, table
        for part in parts:
            assert pq.read_schema(part).remove_metadata() == SCHEMAS[table], (table, part.name)
