"""Retrying with backoff, one policy for every caller: exponential waits with jitter,
bounded by a number of attempts and by time where the caller has a bound, each wait
reported to the caller so it can record it (policy.py). It sits with the vocabularies
and may import only them."""
