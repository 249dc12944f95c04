"""Look for needles (photo bytes, pixels) in what a node put on the wire, in every encoding a leak could
take: raw, hex and base64 (all 3 alignments), in the raw frames, each reassembled blob and each message."""

from __future__ import annotations

import base64
import json

from collab_tui.net.blobs import BlobReceiver
from collab_tui.net.codec import Chunk, FrameDecoder


class WireAudit:
    """Everything one side wrote, in the views a leak could hide in."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.messages: list[dict] = []
        self.message_sizes: list[int] = []
        self.blobs: list[tuple[dict, bytes]] = []
        streams: dict[int, tuple[dict, BlobReceiver]] = {}
        dec = FrameDecoder(max_frame=64 * 1024 * 1024)
        for frame in dec.feed(raw):
            if isinstance(frame, Chunk):
                header, rx = streams[frame.stream_id]
                rx.add(frame.data)
                if rx.done:
                    self.blobs.append((header, rx.finish()))
                    del streams[frame.stream_id]
                continue
            msg = frame.payload
            self.messages.append(msg)
            self.message_sizes.append(len(json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode()))
            if msg["t"] == "blob":
                rx = BlobReceiver(msg["stream"], msg["size"], msg["sha256"], 1 << 30)
                if rx.done:
                    self.blobs.append((msg, rx.finish()))
                else:
                    streams[msg["stream"]] = (msg, rx)
        assert not streams and dec.pending_bytes == 0, "the recorded stream ends inside a frame"

    def views(self) -> dict[str, bytes]:
        out = {"raw stream": self.raw}
        for i, (_, data) in enumerate(self.blobs):
            out[f"blob {i}"] = data
        for i, msg in enumerate(self.messages):
            out[f"message {i} ({msg['t']})"] = json.dumps(msg, ensure_ascii=False).encode()
        return out

    def find(self, needles: dict[str, bytes]) -> list[str]:
        """Names of the needles found in any view, in any of the encodings."""
        found = []
        views = self.views()
        for name, needle in needles.items():
            forms = {"raw": needle, "hex": needle.hex().encode()}
            for k in range(3):
                part = needle[k:]
                forms[f"base64+{k}"] = base64.b64encode(part[: len(part) - len(part) % 3])
            for view, data in views.items():
                hits = [form for form, b in forms.items() if b in data]
                if hits:
                    found.append(f"{name} in {view} as {hits[0]}")
                    break
        return found
