"""Exceptions with one clear sentence for the user (the CLI and the app print them as they are)."""


class LM4LVError(Exception):
    """Base class of every error that LM4LV reports to a user."""


class InputError(LM4LVError, ValueError):
    """The input (an image, a task name, an option) cannot be used."""


class CheckpointError(LM4LVError):
    """A checkpoint is missing, corrupt, or belongs to another LLM or vision module."""
