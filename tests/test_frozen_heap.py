"""The frozen heap hook: VISSL's per-phase gc.collect() skips what existed when training started."""

import gc

from vissl_issl.plugin.hooks import hook_generator
from vissl_issl.plugin.hooks.frozen_heap import FrozenHeapHook

from test_dino import digits_config


class Cycle:
    def __init__(self):
        self.me = self


def test_objects_alive_at_start_are_frozen_and_garbage_of_training_is_still_collected():
    gc.collect()
    alive = Cycle()
    hook = FrozenHeapHook()
    try:
        hook.on_start(task=None)
        assert gc.get_freeze_count() > 0 and not any(o is alive for o in gc.get_objects())
        garbage = Cycle()
        garbage_id = id(garbage)
        del garbage
        assert gc.collect() >= 1  # the cycle made after the start is collected
        assert not any(id(o) == garbage_id for o in gc.get_objects())
    finally:
        hook.on_end(task=None)
    assert gc.get_freeze_count() == 0 and any(o is alive for o in gc.get_objects())


def test_every_run_gets_the_hook_first():
    assert isinstance(hook_generator(digits_config())[0], FrozenHeapHook)
