"""The errors a user can cause, shared by every layer (no imports: anything may import this module).

- :class:`UserError`: a mistake in what was asked for on the command line; the ``effnet`` CLI prints
  it as one line and exits with status 2.
- :class:`CheckpointError`: a file that is not a readable effnet / torchvision / timm checkpoint, or
  does not fit the model it is meant for.  It subclasses :class:`ValueError`, not
  :class:`UserError`: it is raised at the library's public edge (``effnet.load``,
  ``create_model(weights=...)``), where bad input is a ``ValueError`` as everywhere in Python, and the
  CLI prints ValueErrors as one line anyway.  A UserError base would tie a library error to the CLI.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "UserError"]


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, exit status 2."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that does not fit its model; the message is one line
    and names the file."""
