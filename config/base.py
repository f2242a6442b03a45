"""What every config section is built from: the error type and the field helper."""

import dataclasses


class ConfigError(ValueError):
  """A configuration problem; the message names the offending key."""


def _field(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING,
           min=None, max=None, min_exclusive=False, choices=None, doc=''):  # pylint: disable=redefined-builtin
  """A dataclass field with range / choice constraints checked on load."""
  meta = dict(min=min, max=max, min_exclusive=min_exclusive, choices=choices,
              doc=doc)
  if default_factory is not dataclasses.MISSING:
    return dataclasses.field(default_factory=default_factory, metadata=meta)
  return dataclasses.field(default=default, metadata=meta)
