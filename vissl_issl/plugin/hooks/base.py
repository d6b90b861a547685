from classy_vision.hooks.classy_hook import ClassyHook


class PluginHook(ClassyHook):
    """A ClassyHook whose events do nothing unless a subclass defines them (ClassyHook makes every
    event abstract)."""

    on_start = ClassyHook._noop
    on_phase_start = ClassyHook._noop
    on_forward = ClassyHook._noop
    on_loss_and_meter = ClassyHook._noop
    on_backward = ClassyHook._noop
    on_update = ClassyHook._noop
    on_step = ClassyHook._noop
    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop
