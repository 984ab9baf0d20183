"""Scratch files, scratch databases and child processes, and what killed runs leave of
them: the ledger a run records them in before it makes them, the child processes that
die with aishell, and the cleaning of what dead runs left. May import state, targets
and the vocabularies."""
