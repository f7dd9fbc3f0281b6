"""The Trio layer's own sizes (spec §9-§11); the ones both layers share are in
:mod:`flowproto.iolayer`."""

from __future__ import annotations

from typing import Final

__all__ = ["READ_SIZE"]

#: Bytes read from the transport per ``receive_some`` call.
READ_SIZE: Final = 256 * 1024
