"""A PostgreSQL B-tree's free share: the part of its pages that a rebuild at its fill
factor would give back, estimated from the catalog's statistics or read from
pgstatindex, in the same terms so that one threshold judges both.

A rebuild writes each key once per posting list where the index deduplicates (a posting
list holds a key and up to about 130 row pointers of 6 bytes each), else once per entry
with an 8-byte header and a 4-byte line pointer. An index with many duplicates is then
a fraction of what one entry per row would take: counting every entry whole would call
such an index full when half its room is empty. The estimate is within a few points of
what a rebuild gives back where the keys are spread evenly (tests/handlers/postgresql/
test_index_free_estimate.py): a build of long posting lists ends each page a little short
of the fill factor, and key columns that go together are counted as if they did not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

# A page's 24-byte header and a B-tree's 16-byte special space hold no entries.
_PAGE_OVERHEAD = 24 + 16
_TUPLE_HEADER = 8
_LINE_POINTER = 4
_HEAP_POINTER = 6
_ALIGN = 8
# Internal pages are filled to 70% when an index is built (BTREE_NONLEAF_FILLFACTOR).
_INTERNAL_FILL = 0.70

# Whether the index keeps duplicates as posting lists, as PostgreSQL decides it (13 and
# later): not a unique index, no INCLUDE columns, deduplicate_items not turned off, and
# every key's operator class able to tell equal images (a support function 4; numeric,
# float, jsonb and arrays have none) under a deterministic collation. Aliases: x the
# index's pg_index row, i its pg_class row.
DEDUPLICATES = """(NOT x.indisunique AND x.indnatts = x.indnkeyatts
        AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.unnest(i.reloptions) o
             WHERE o OPERATOR(pg_catalog.~*)
                   '^deduplicate_items=(f|fa|fal|fals|false|n|no|of|off|0)$')
        AND NOT EXISTS (
            SELECT 1
              FROM ROWS FROM (pg_catalog.unnest(CAST(x.indclass AS pg_catalog.oid[])),
                              pg_catalog.unnest(CAST(x.indcollation AS pg_catalog.oid[])))
                   k(opc, coll)
              JOIN pg_opclass oc ON oc.oid = k.opc
              LEFT JOIN pg_collation co ON co.oid = k.coll
             WHERE NOT coalesce(co.collisdeterministic, true)
                OR NOT EXISTS (
                   SELECT 1 FROM pg_amproc p
                    WHERE p.amprocfamily = oc.opcfamily AND p.amprocnum = 4
                      AND p.amproclefttype = oc.opcintype
                      AND p.amprocrighttype = oc.opcintype)))"""


def _aligned(size: float) -> int:
    return math.ceil(size / _ALIGN) * _ALIGN


def usable(block: int, fillfactor: int) -> float:
    """The bytes of a leaf page a build fills: all but the fill factor's reserve."""
    return (block - _PAGE_OVERHEAD) - block * (100 - fillfactor) / 100.0


def _groups(entries: float, distincts: Sequence[Any]) -> float:
    """How many distinct keys the entries hold: pg_stats' n_distinct of each key column
    (a count, or minus a share of the rows), multiplied, at most one per entry."""
    groups = 1.0
    for n in distincts:
        if n is None:
            return entries
        n = float(n)
        groups *= n if n >= 0 else -n * entries
    return min(max(groups, 1.0), entries)


def leaf_bytes(
    entries: float, key_width: float, distincts: Sequence[Any] | None, block: int
) -> float:
    """The bytes a rebuild writes to the leaf pages: posting lists where the index
    deduplicates (distincts given), one entry per row elsewhere; the keys assumed evenly
    spread over their distinct values."""
    base = _aligned(_TUPLE_HEADER + key_width)
    plain = base + _LINE_POINTER
    # A build caps a posting list at a tenth of the page (nbtsort.c), less its pointer.
    cap = (block * 10 // 100) // _ALIGN * _ALIGN - _LINE_POINTER
    per_list = (cap - base) // _HEAP_POINTER
    if not distincts or per_list < 2 or entries <= 0:
        return entries * plain
    groups = _groups(entries, distincts)
    each = entries / groups
    lists = math.ceil(each / per_list)
    posting = lists * (_aligned(base + _HEAP_POINTER * each / lists) + _LINE_POINTER)
    return groups * min(each * plain, posting)


def needed_pages(leaf: float, block: int, fillfactor: int, key_width: float) -> int:
    """The pages a rebuild makes of `leaf` bytes of entries: its leaf pages, the internal
    pages above them (a key and a pointer per page below) and the metapage."""
    pages = math.ceil(leaf / usable(block, fillfactor))
    per_internal = (
        (block - _PAGE_OVERHEAD)
        * _INTERNAL_FILL
        / (_aligned(_TUPLE_HEADER + key_width) + _LINE_POINTER)
    )
    level, total = pages, pages
    while level > 1:
        level = math.ceil(level / per_internal)
        total += level
    return total + 1


def free_percent(needed: float, pages: float) -> float:
    """The share of `pages` that a rebuild to `needed` pages gives back."""
    if pages <= 0:
        return 0.0
    return round(max(100.0 * (1 - needed / pages), 0.0), 2)


def estimated_free(row: Mapping[Any, Any], entries: float) -> float | None:
    """The free share of a B-tree from the statistics (None: not a B-tree, or a key
    column without statistics): the pages its entries need against its pages now."""
    if row["method"] != "btree" or row["unknown_columns"] or row["entries"] < 0:
        return None
    if not row["bytes"]:
        return 0.0
    block, width = int(row["block_size"]), float(row["key_width"] or 0)
    distincts = row["distincts"] if row["deduplicates"] else None
    leaf = leaf_bytes(entries, width, distincts, block)
    return free_percent(
        needed_pages(leaf, block, int(row["fillfactor"]), width), row["bytes"] / block
    )


def measured_free(stats: Mapping[Any, Any], block: int, fillfactor: int) -> float:
    """The free share of a B-tree from pgstatindex: the bytes its leaf pages hold
    (avg_leaf_density of each page's room) packed at the fill factor, with the internal
    pages and the metapage, against every page it has (empty and deleted ones free)."""
    density = float(stats["avg_leaf_density"] or 0)
    if math.isnan(density):
        density = 0.0  # an index without leaf pages: pgstatindex divides by none
    held = int(stats["leaf_pages"] or 0) * (block - _PAGE_OVERHEAD) * density / 100.0
    leaf = math.ceil(held / usable(block, fillfactor)) if held else 0
    needed = leaf + int(stats["internal_pages"] or 0) + 1
    return free_percent(needed, int(stats["index_size"] or 0) / block)
