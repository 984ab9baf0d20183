"""The PostgreSQL catalog query of the code of a database's own that its tables run
(usercode.py): each index, partition key, statistics object, column type, default (a
column's own or its domain's), generated column, check, domain check, policy, trigger
and rule, with the
user-defined functions it calls, the table's ancestors, and an index's access method.
"""

from __future__ import annotations

from aishell.guard.operators import exact_operators
from aishell.guard.pgcode import pg_catalog_relation, pg_tree_calls, pg_user_code

# pg_catalog's relation, as pg_depend's classid holds it: short, for the query below.
_rel = pg_catalog_relation

# FirstNormalObjectId: what initdb made is below. Constants are left for the exact
# operator to type: a type the query named would be one the guard looks for in it.
_USER = "'16384'"


# Functions of the database's own: not the catalog's, not an installed extension's.
# Each object's calls: the functions its expressions name (pg_depend records each one an
# index, default, constraint, policy, trigger, rule or statistics object uses) and those
# behind the operators they name. An index also calls its operator classes' support
# functions and operators' functions (REINDEX and every write order its entries with
# them); ANALYZE calls, for each column, its type's typanalyze, a range's canonical and
# subtype_diff functions and its subtype's operator class, and the default btree and
# hash operator classes' functions (to sort and count distinct values), of the type and
# of every type it is made of (a domain's base, an array's element, a range's subtype, a
# composite's attributes). Every operator is written exactly as pg_catalog's
# (operators.exact_operators).
PG_TABLE_CODE = f"""
WITH RECURSIVE aishell_fn AS (
  SELECT p.oid, n.nspname, p.proname
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  WHERE {pg_user_code()}
), aishell_calls AS (
  SELECT d.classid, d.objid, f.nspname, f.proname
  FROM pg_catalog.pg_depend d JOIN aishell_fn f
    ON d.refclassid = {_rel("pg_proc")} AND d.refobjid = f.oid
  -- The catalog's own functions they call, which pg_depend does not record.
  UNION SELECT x.classid, x.objid, f.nspname, f.proname FROM (
    SELECT {_rel("pg_constraint")} AS classid, k.oid AS objid,
      k.conbin::pg_catalog.text AS tree
    FROM pg_catalog.pg_constraint k WHERE k.oid >= {_USER} AND k.conbin IS NOT NULL
    UNION ALL SELECT {_rel("pg_attrdef")}, ad.oid, ad.adbin::pg_catalog.text
    FROM pg_catalog.pg_attrdef ad WHERE ad.oid >= {_USER}
    UNION ALL SELECT {_rel("pg_policy")}, p.oid, COALESCE(p.polqual::pg_catalog.text, '')
      || COALESCE(p.polwithcheck::pg_catalog.text, '')
    FROM pg_catalog.pg_policy p WHERE p.oid >= {_USER}
    UNION ALL SELECT {_rel("pg_class")}, i.indexrelid,
      COALESCE(i.indexprs::pg_catalog.text, '') || COALESCE(i.indpred::pg_catalog.text, '')
    FROM pg_catalog.pg_index i
    WHERE i.indexrelid >= {_USER} AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL)
    UNION ALL SELECT {_rel("pg_statistic_ext")}, s.oid, s.stxexprs::pg_catalog.text
    FROM pg_catalog.pg_statistic_ext s WHERE s.oid >= {_USER} AND s.stxexprs IS NOT NULL
    UNION ALL SELECT {_rel("pg_class")}, pt.partrelid, pt.partexprs::pg_catalog.text
    FROM pg_catalog.pg_partitioned_table pt
    WHERE pt.partrelid >= {_USER} AND pt.partexprs IS NOT NULL
    UNION ALL SELECT {_rel("pg_trigger")}, t.oid, t.tgqual::pg_catalog.text
    FROM pg_catalog.pg_trigger t WHERE t.oid >= {_USER} AND t.tgqual IS NOT NULL
    UNION ALL SELECT {_rel("pg_rewrite")}, r.oid, r.ev_action::pg_catalog.text
      || COALESCE(r.ev_qual::pg_catalog.text, '')
    FROM pg_catalog.pg_rewrite r WHERE r.oid >= {_USER} AND r.rulename <> '_RETURN'
    UNION ALL SELECT {_rel("pg_type")}, t.oid, t.typdefaultbin::pg_catalog.text
    FROM pg_catalog.pg_type t WHERE t.oid >= {_USER} AND t.typdefaultbin IS NOT NULL
  ) x CROSS JOIN LATERAL {pg_tree_calls("x.tree")} c
  JOIN aishell_fn f ON f.oid = c.fn AND c.fn < {_USER}
  UNION SELECT d.classid, d.objid, f.nspname, f.proname
  FROM pg_catalog.pg_operator o JOIN aishell_fn f ON f.oid = o.oprcode
  JOIN pg_catalog.pg_depend d ON d.refclassid = {_rel("pg_operator")} AND d.refobjid = o.oid
), aishell_family_fn(family, fn) AS (
  -- Entries a user added (to an operator family of their own, or to the catalog's).
  SELECT a.amprocfamily, f.oid FROM pg_catalog.pg_amproc a
  JOIN aishell_fn f ON f.oid = a.amproc
  WHERE a.oid >= {_USER}
  UNION SELECT a.amopfamily, f.oid FROM pg_catalog.pg_amop a
  JOIN pg_catalog.pg_operator o ON o.oid = a.amopopr
  JOIN aishell_fn f ON f.oid = o.oprcode
  WHERE a.oid >= {_USER}
), aishell_type_fn(typ, fn, analyze_only) AS (
  -- analyze_only: the typanalyze, which only ANALYZE calls; the others run wherever
  -- values of the type are compared, sorted or merged, an index's operator class too
  -- (the catalog's range_ops calls a range's canonical and subtype_diff functions, as
  -- a GiST build or insert weighs where an entry goes; a composite's or an array's
  -- comparison calls its members' default operator classes).
  SELECT t.oid, f.oid, true FROM pg_catalog.pg_type t
  JOIN aishell_fn f ON f.oid = t.typanalyze
  WHERE t.oid >= {_USER}
  UNION SELECT r.rngtypid, f.oid, false FROM pg_catalog.pg_range r JOIN aishell_fn f
    ON f.oid = ANY (ARRAY[r.rngcanonical, r.rngsubdiff])
  UNION SELECT r.rngtypid, ff.fn, false FROM pg_catalog.pg_range r
  JOIN pg_catalog.pg_opclass oc ON oc.oid = r.rngsubopc
  JOIN aishell_family_fn ff ON ff.family = oc.opcfamily
  UNION SELECT oc.opcintype, ff.fn, false FROM pg_catalog.pg_opclass oc
  JOIN pg_catalog.pg_am am ON am.oid = oc.opcmethod
  JOIN aishell_family_fn ff ON ff.family = oc.opcfamily
  WHERE oc.opcdefault AND am.amname = ANY ('{{btree,hash}}')
), aishell_made_of(relid, attname, typ) AS (
  -- Each column's type and the types it is made of, of a table's columns and of an
  -- index's entries (a column's or an expression's). Only a type a user made holds one
  -- (or is one) with such a function: the catalog's types are made of the catalog's.
  SELECT a.attrelid, a.attname, a.atttypid FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class ac ON ac.oid = a.attrelid
    AND ac.relkind = ANY ('{{r,p,m,f,i,I}}')
  WHERE a.atttypid >= {_USER} AND a.attnum > '0' AND NOT a.attisdropped
  UNION SELECT m.relid, m.attname, x.typ FROM aishell_made_of m
  JOIN pg_catalog.pg_type t ON t.oid = m.typ CROSS JOIN LATERAL (
    SELECT t.typbasetype UNION ALL SELECT t.typelem
    UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid
    UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid
    UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = t.typrelid AND a.attnum > '0' AND NOT a.attisdropped
  ) x(typ)
  WHERE x.typ >= {_USER}
), aishell_domains(typ, top) AS (
  SELECT t.oid, t.oid FROM pg_catalog.pg_type t WHERE t.typtype = 'd'
  UNION SELECT b.oid, d.top FROM aishell_domains d
  JOIN pg_catalog.pg_type t ON t.oid = d.typ
  JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype
  WHERE b.typtype = 'd'
), aishell_code(kind, relid, object, events, detail, nspname, proname) AS (
  SELECT 'index', i.indrelid, ic.relname, NULL, NULL, c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_index i
    ON c.classid = {_rel("pg_class")} AND c.objid = i.indexrelid
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  UNION ALL SELECT 'index', i.indrelid, ic.relname, NULL,
    ' (operator class ' || oc.opcname::pg_catalog.text || ')', f.nspname, f.proname
  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_opclass oc ON oc.oid = ANY (i.indclass)
  JOIN aishell_family_fn ff ON ff.family = oc.opcfamily
  JOIN aishell_fn f ON f.oid = ff.fn
  -- A partitioned table's key: its expressions, evaluated to route each row written
  -- (and folded by the planner where they hold no column), and its operator classes,
  -- which route them and prune the partitions a statement's conditions rule out.
  UNION ALL SELECT 'partition key', pt.partrelid, '', NULL, NULL, c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_partitioned_table pt
    ON c.classid = {_rel("pg_class")} AND c.objid = pt.partrelid
  UNION ALL SELECT 'partition key', pt.partrelid, '', NULL,
    ' (operator class ' || oc.opcname::pg_catalog.text || ')', f.nspname, f.proname
  FROM pg_catalog.pg_partitioned_table pt
  JOIN pg_catalog.pg_opclass oc ON oc.oid = ANY (pt.partclass)
  JOIN aishell_family_fn ff ON ff.family = oc.opcfamily
  JOIN aishell_fn f ON f.oid = ff.fn
  UNION ALL SELECT 'statistics', s.stxrelid, s.stxname, NULL, NULL, c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_statistic_ext s
    ON c.classid = {_rel("pg_statistic_ext")} AND c.objid = s.oid
  UNION ALL SELECT 'column type', m.relid, m.attname, NULL,
    ' (of type ' || a.atttypid::pg_catalog.regtype::pg_catalog.text || ')', f.nspname, f.proname
  FROM aishell_made_of m JOIN aishell_type_fn u ON u.typ = m.typ
  JOIN aishell_fn f ON f.oid = u.fn
  JOIN pg_catalog.pg_attribute a ON a.attrelid = m.relid AND a.attname = m.attname
  JOIN pg_catalog.pg_class ac ON ac.oid = m.relid AND ac.relkind = ANY ('{{r,p,m,f}}')
  -- An index's entries are compared with their types' functions as it is built, written
  -- and checked; ANALYZE analyzes an expression's values with its type's typanalyze too.
  UNION ALL SELECT 'index', i.indrelid, ic.relname, NULL,
    ' (entries of type ' || a.atttypid::pg_catalog.regtype::pg_catalog.text || ')',
    f.nspname, f.proname
  FROM aishell_made_of m JOIN pg_catalog.pg_index i ON i.indexrelid = m.relid
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = m.relid AND a.attname = m.attname
  JOIN aishell_type_fn u ON u.typ = m.typ
    AND (NOT u.analyze_only OR i.indkey[a.attnum - '1'] = '0')
  JOIN aishell_fn f ON f.oid = u.fn
  UNION ALL SELECT CASE WHEN a.attgenerated = '' THEN 'default'
    ELSE 'generated' END,
    ad.adrelid, a.attname, NULL, NULL, c.nspname, c.proname FROM aishell_calls c
  JOIN pg_catalog.pg_attrdef ad ON c.classid = {_rel("pg_attrdef")} AND c.objid = ad.oid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
  -- A column of its own without a default takes its domain's (the domain's own type's:
  -- a domain over another keeps the default it was given or inherited when made).
  UNION ALL SELECT 'default', a.attrelid, a.attname, NULL,
    ' (of domain ' || dt.oid::pg_catalog.regtype::pg_catalog.text || ')', c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_type dt
    ON c.classid = {_rel("pg_type")} AND c.objid = dt.oid
    AND dt.typtype = 'd' AND dt.typdefaultbin IS NOT NULL
  JOIN pg_catalog.pg_attribute a ON a.atttypid = dt.oid
    AND a.attnum > '0' AND NOT a.attisdropped AND NOT a.atthasdef
  JOIN pg_catalog.pg_class ac ON ac.oid = a.attrelid
    AND ac.relkind = ANY ('{{r,p,f}}')
  UNION ALL SELECT 'check', k.conrelid, k.conname, NULL, NULL, c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_constraint k
    ON c.classid = {_rel("pg_constraint")} AND c.objid = k.oid
  WHERE k.conrelid <> '0'
  UNION ALL SELECT 'domain', a.attrelid, a.attname, NULL,
    ' (of domain ' || dt.oid::pg_catalog.regtype::pg_catalog.text || ')', c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_constraint k
    ON c.classid = {_rel("pg_constraint")} AND c.objid = k.oid
  JOIN aishell_domains dm ON dm.typ = k.contypid
  JOIN pg_catalog.pg_type dt ON dt.oid = dm.top
  JOIN pg_catalog.pg_attribute a ON a.atttypid = dm.top
    AND a.attnum > '0' AND NOT a.attisdropped
  JOIN pg_catalog.pg_class ac ON ac.oid = a.attrelid
    AND ac.relkind = ANY ('{{r,p,f}}')
  UNION ALL SELECT 'policy', p.polrelid, p.polname, p.polcmd::pg_catalog.text, NULL,
    c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_policy p
    ON c.classid = {_rel("pg_policy")} AND c.objid = p.oid
  WHERE pg_catalog.row_security_active(p.polrelid)
  UNION ALL SELECT 'trigger', t.tgrelid, t.tgname, t.tgtype::pg_catalog.text,
    NULL, c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_trigger t
    ON c.classid = {_rel("pg_trigger")} AND c.objid = t.oid
  WHERE NOT t.tgisinternal AND t.tgenabled <> 'D'
  UNION ALL SELECT 'rule', r.ev_class, r.rulename, r.ev_type::pg_catalog.text, NULL,
    c.nspname, c.proname
  FROM aishell_calls c JOIN pg_catalog.pg_rewrite r
    ON c.classid = {_rel("pg_rewrite")} AND c.objid = r.oid
  WHERE r.rulename <> '_RETURN' AND r.ev_enabled <> 'D'
), aishell_up(relid, o) AS (
  -- Each table's partitioned and inherited ancestors.
  SELECT i.inhrelid, i.inhparent FROM pg_catalog.pg_inherits i
  WHERE i.inhrelid = ANY (SELECT relid FROM aishell_code)
  UNION SELECT u.relid, i.inhparent FROM aishell_up u
  JOIN pg_catalog.pg_inherits i ON i.inhrelid = u.o
)
SELECT code.kind, n.nspname, k.relname, code.object, code.events, code.detail,
  code.nspname, code.proname, pg_catalog.pg_table_is_visible(k.oid),
  ARRAY(SELECT an.nspname FROM aishell_up u JOIN pg_catalog.pg_class ac ON ac.oid = u.o
        JOIN pg_catalog.pg_namespace an ON an.oid = ac.relnamespace
        WHERE u.relid = k.oid ORDER BY u.o),
  ARRAY(SELECT ac.relname::pg_catalog.text FROM aishell_up u
        JOIN pg_catalog.pg_class ac ON ac.oid = u.o WHERE u.relid = k.oid ORDER BY u.o),
  ARRAY(SELECT pg_catalog.pg_table_is_visible(u.o) FROM aishell_up u
        WHERE u.relid = k.oid ORDER BY u.o),
  (SELECT am.amname::pg_catalog.text
     || CASE WHEN code.detail IS NULL THEN '' ELSE ' operator class' END
   FROM pg_catalog.pg_class ic JOIN pg_catalog.pg_am am ON am.oid = ic.relam
   WHERE code.kind = 'index' AND ic.relname = code.object
     AND ic.relnamespace = k.relnamespace)
FROM aishell_code code JOIN pg_catalog.pg_class k ON k.oid = code.relid
JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace ORDER BY 2, 3, 1, 4, 7, 8
"""
PG_TABLE_CODE = exact_operators(PG_TABLE_CODE)
