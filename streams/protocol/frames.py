"""Length-prefixed request frames, split out of a byte stream with a hard size limit.

A hostile or broken peer can declare any length; the limit is checked against the 4-byte prefix
before a single byte of the body is buffered, so memory per connection stays bounded.
"""

from __future__ import annotations

__all__ = ["FrameError", "FrameReader"]

_PREFIX = 4


class FrameError(ValueError):
    """The byte stream cannot be framed (oversized or negative length); the connection must close."""


class FrameReader:
    """Incremental frame splitter: ``feed`` bytes in, get complete frame bodies out."""

    __slots__ = ("_buf", "_max_frame", "_need")

    def __init__(self, max_frame_bytes: int) -> None:
        self._buf = bytearray()
        self._max_frame = max_frame_bytes
        self._need = -1  # body size of the frame being assembled, -1 while the prefix is incomplete

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytearray]:
        self._buf += data
        frames: list[bytearray] = []
        buf = self._buf
        pos = 0
        end = len(buf)
        while True:
            if self._need < 0:
                if end - pos < _PREFIX:
                    break
                size = int.from_bytes(buf[pos : pos + _PREFIX], "big", signed=True)
                if size < 0 or size > self._max_frame:
                    self._buf = bytearray()
                    raise FrameError(
                        f"request frame of {size} bytes is outside 0..{self._max_frame} "
                        "(raise --max-request-size if a legitimate client sends larger requests)"
                    )
                self._need = size
                pos += _PREFIX
            if end - pos < self._need:
                break
            frames.append(buf[pos : pos + self._need])
            pos += self._need
            self._need = -1
        if pos:
            del buf[:pos]
        return frames
