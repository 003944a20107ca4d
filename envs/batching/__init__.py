"""`schedgym/Batching-v0`: LLM continuous batching on one simulated serving replica.

``engine`` is the numpy simulator core (vLLM-v1-like), ``env`` its Gymnasium face, ``metrics``
the episode metrics, records, their independent validator and the CDF plot.
"""
