"""`schedgym/MemoryMap-v0`, in the rooms every problem has (docs/architecture.md).

``core`` is the numpy simulator (no Gymnasium), ``env`` its Gymnasium face (observations,
action masks, rewards), ``record`` the episode record's independent validator and plots,
``bench`` its rows for ``schedgym bench``. Nothing is imported here, so a caller that needs one
room (a serving plugin, a validator) loads only that room's dependencies.
"""
