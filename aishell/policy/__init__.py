"""The approval policy: its rules (whether a step may run, whether a person must say
yes, and why) and the approvers that ask. May import the registry, the tool contract
and everything below them; never agents, executor or above."""
