"""JupyterLab's file access for ``scripts/lab.sh``: a file without write bits is read-only, for root too.

Jupyter's contents manager asks ``os.access(path, W_OK)`` whether a file is writable, and for root that is
always true, so the executed copies (``figures/*/<nb>.ipynb``, made read-only by
``genqlib.paper.executed_copies``) would open as ordinary notebooks on a machine where the lab runs as root.
This manager also reads the mode bits: without any write bit the file is reported read-only (JupyterLab then
shows "notebook is read-only" and offers only "Save as…"), and a save over it is refused with 403.
``lab.sh`` puts ``scripts/`` on the server's path and passes
``--ServerApp.contents_manager_class=lab_contents.ModeBitsFileManager``. It lives here, not in genqlib, because
importing anything from genqlib imports torch and diffusers (``genqlib/__init__``), which the server does not
need and which would slow its start by seconds (minutes on a loaded machine).
"""

from __future__ import annotations

import os
import stat

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def has_write_bits(os_path: str) -> bool:
    """Whether the file at ``os_path`` has any write bit (a folder, or a path that is not there, counts as
    writable: only files are protected)."""
    try:
        st = os.stat(os_path)
    except OSError:
        return True
    return not stat.S_ISREG(st.st_mode) or bool(st.st_mode & WRITE_BITS)


class ModeBitsFileManager(AsyncLargeFileManager):
    """The server's default contents manager, plus: a file without write bits is not writable."""

    def is_writable(self, path: str) -> bool:
        """``os.access`` as the default, and the file's write bits (what root's ``os.access`` ignores)."""
        return super().is_writable(path) and has_write_bits(self._get_os_path(path=path.strip("/")))

    async def save(self, model: dict, path: str = "") -> dict:
        """Refuse (403) to write over a file without write bits; otherwise the default save."""
        if not has_write_bits(self._get_os_path(path=path.strip("/"))):
            raise web.HTTPError(
                403, f"{path} is read-only (an executed copy): use Save as… for your own copy"
            )
        return await super().save(model, path)
