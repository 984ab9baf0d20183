"""Configuration: the models of aishell.yaml and the agents' files (models), reading
them (files), the checks on their values (checks), editing a file as a person would
(edit), where the home is (home), every option of a job or a run defined once
(options), the upper limits many settings share (bounds),
the bundled resources, the state store's URL, and which targets a selector picks
(selection); what the listings read of the config without the models (view), kept in
the listings' cache (cache), a file's bytes as the loader reads them (sources) and a
database URL read as SQLAlchemy reads it (dburl). Its face stays empty so that
`--help` loads no pydantic. Also how the catalog sorts tools (kinds), which the
agents' files name. May import only the vocabularies."""
