"""Links that open the note a source came from, in the app that holds the notes.

    Roam (JSON export, with block uids)  https://roamresearch.com/#/app/GRAPH/page/UID
                                         (GRAPH: `notes.roam_graph` in params.yaml)
    Logseq (id:: uuids)                  logseq://graph/GRAPH?block-id=UUID, else
                                         logseq://graph/GRAPH?page=PAGE
                                         (GRAPH: the graph folder's name)
    Obsidian and markdown folders        obsidian://open?vault=VAULT&file=PATH#HEADING
                                         (VAULT: the vault folder's name)

A Roam markdown export has no block uids, so its blocks get no link ("" everywhere:
callers show the page name alone).
"""

from __future__ import annotations

from urllib.parse import quote

ROAM_APP = "https://roamresearch.com/#/app/"


def block_link(
    fmt: str, folder_name: str, page: str, uid: str = "", source: str = "", heading: str = "", graph: str = ""
) -> str:
    """The URI that opens a block (or its page), or "" when its format or the notes do
    not say enough. A block's uid is its top-level block's (bytechat.notes.blocks)."""
    if fmt == "roam-json" and uid and graph:
        return f"{ROAM_APP}{quote(graph, safe='')}/page/{quote(uid, safe='')}"
    if fmt == "logseq" and folder_name:
        where = f"block-id={quote(uid, safe='')}" if uid else f"page={quote(page, safe='')}"
        return f"logseq://graph/{quote(folder_name, safe='')}?{where}"
    if fmt in ("obsidian", "markdown") and source and folder_name:
        file = source.removesuffix(".md")
        if uid:
            file += f"#^{uid}"
        elif heading:
            file += f"#{heading}"
        return f"obsidian://open?vault={quote(folder_name, safe='')}&file={quote(file, safe='')}"
    return ""
