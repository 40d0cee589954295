"""The playground's server-sent-events reader (app.js `events`), run under Node on hand-made
byte streams: events split by a blank line, "\\r\\n" line ends, and a "\\r\\n" cut between two
reads (a proxy in front of imagegate may re-chunk and re-terminate the stream)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "src/imagegate/web/app.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node to run the page's script")


def events_source() -> str:
    """`async function* events(resp) {...}` cut out of app.js by matching its braces."""
    text = APP.read_text()
    start = text.index("async function* events(")
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
        i += 1


def read_events(chunks: list[str]) -> list[object]:
    script = events_source() + """
const chunks = JSON.parse(process.argv[1]);
const enc = new TextEncoder();
const body = new ReadableStream({
  start(c) { for (const s of chunks) c.enqueue(enc.encode(s)); c.close(); },
});
(async () => {
  const got = [];
  for await (const e of events(new Response(body))) got.push(e);
  console.log(JSON.stringify(got));
})().catch((e) => { console.error(String(e)); process.exit(3); });
"""
    assert NODE is not None
    run = subprocess.run([NODE, "-e", script, json.dumps(chunks)], check=False, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_events_split_by_blank_lines_in_any_chunking() -> None:
    stream = 'event: x\ndata: {"a": 1}\n\ndata: {"b":\ndata: 2}\n\n'
    whole = read_events([stream])
    assert whole == [{"a": 1}, {"b": 2}]
    assert read_events(list(stream)) == whole  # one character a read


def test_crlf_line_ends_even_when_a_read_ends_between_cr_and_lf() -> None:
    stream = 'data: {"a": 1}\r\n\r\ndata: {"b": 2}\r\n\r\n'
    assert read_events([stream]) == [{"a": 1}, {"b": 2}]
    cut = stream.index("\r\n\r\n") + 3  # the first event's blank line cut after its "\r"
    assert read_events([stream[:cut], stream[cut:]]) == [{"a": 1}, {"b": 2}]
    assert read_events(list(stream)) == [{"a": 1}, {"b": 2}]
