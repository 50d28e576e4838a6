"""The live preview page: what the camera sees, the faces found and their emotions, in a browser.

Off by default (`preview.enabled`, `--preview [HOST:]PORT`). Standard library only: an http.server in daemon
threads serves one inline HTML page, an MJPEG stream and a small JSON status; no framework, no assets.

    address.py  --preview [HOST:]PORT parsing, loopback checks (bind address, Host header)
    auth.py     the token: from preview.token_file or the systemd credential; constant-time check
    overlay.py  boxes, track ids, emotions and confidence drawn on a frame; JPEG encoding
    hub.py      between the processing loop and the viewers: newest-frame slot, capped-rate encoder thread
    server.py   the HTTP side: page, stream, status; bounded viewers; a stalled viewer never blocks anything
    page.html   the page itself
"""

from __future__ import annotations

from edge.preview.address import parse_bind

__all__ = ["parse_bind"]
