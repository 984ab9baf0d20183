"""The tool contract, below both the registry and the handlers: what a tool runs with
(context), the shape of a definition file (definition), its risks, params, locks and
report rules as a definition declares them, what a run's steps measured (readings),
and the tools whose work is fixed SQL (fixedsql). Modules here may import the guard,
scratch, state, targets, config and the vocabularies; never the registry, handlers or
above."""
