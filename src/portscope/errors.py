"""Errors that cross layers and become exit codes in cli/.

Core code raises these instead of printing or exiting, so that every command turns them into exactly one
line and the documented exit code (DESIGN.md): 2 for input the user can fix, 3 for a job the machine
cannot do.
"""


class BadInput(ValueError):
    """The user's input is wrong; the message names the problem and the valid form (exit 2)."""


class CannotDo(RuntimeError):
    """The job cannot be done here: permission, missing kernel feature (exit 3)."""
