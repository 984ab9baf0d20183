"""What a statement may do, decided before the server runs it: statements as data
(statements), the parser's reading of a read (sqlcheck, lex, calls), what makes a read
write unseen (hidden, usercode, usercodeactions, eventtriggers), which tables a write
reaches (writtentables, writereach, bodywrites), and the guarded connection every step's
SQL goes through (connection). Modules here may import targets, state, config and the
vocabularies; never the tool contract, the registry, handlers or above."""
