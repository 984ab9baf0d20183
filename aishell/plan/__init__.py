"""Plans: the model (ordered steps over the registry, validated, hashed, serialised),
the shapes of plan files and of drafted plans (shapes), references between steps
(${step_N.output.key}), the conditions steps run under (conditions), parallel groups
of read-only steps (groups) and signatures.
May import the registry, the tool contract and everything below them; never agents
or above."""
