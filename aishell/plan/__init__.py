"""Plans: the model (ordered steps over the registry, validated, hashed, serialised),
references between steps (${step_N.output.key}) and signatures. May import the
registry, the tool contract and everything below them; never agents or above."""
