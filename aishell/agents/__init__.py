"""Agents turn a job into a plan of steps over the registry: `available` names them,
`base` says what each offers, `jobs` makes a job from the command line's options.
Agents may import policy, the registry, handlers and everything below them."""
