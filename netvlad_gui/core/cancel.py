"""``Cancelled``: in a module of its own (no torch), so that a build can catch it without
importing the network code a no-op run never needs."""


class Cancelled(Exception):
    """The user asked to stop; whatever was finished before is kept."""
