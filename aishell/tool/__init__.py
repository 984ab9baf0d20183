"""The tool contract, below both the registry and the handlers: what a tool runs with
(context), how the catalog sorts tools (kinds), the shape of a definition file
(definition), its risks, params, locks and report rules as a definition declares
them, what a run's steps measured (readings), and the tools whose work is fixed SQL
(fixedsql). Modules here may import the guard, targets, state, config, scratch and
the vocabularies; never the registry, handlers or above."""
