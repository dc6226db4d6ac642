#!/usr/bin/env python3
"""aiortc interop test: publish and play through hopcast with a non-browser WebRTC stack.

aiortc numbers its codecs differently from Chrome (Opus 96, VP8 97, RTX 98), and the
player's offer is renumbered again (Opus 109, VP8 110, RTX 111, as in the original bug
report), so the server must map payload types per peer for any frame to decode.
Media content is checked end to end: every video picture carries a frame counter as
big black/white blocks (survives lossy VP8), audio is a 440 Hz tone.

Prints exactly one JSON line on stdout; exit code 0 only when ok. Logs go to stderr.
Requirements: tests/aiortc/requirements.txt.
"""
import argparse, array, asyncio, json, logging, math, re, sys, time, urllib.request, uuid

import av
from aiortc import AudioStreamTrack, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("interop")
W, H, COLS, ROWS = 320, 240, 6, 4  # 24 blocks of ~53x60 px: 16 counter bits + 8 check bits
NEED_VIDEO, NEED_AUDIO, MEDIA_WAIT, HARD_TIMEOUT = 20, 20, 15.0, 40.0
# Player numbering: different from aiortc's default (the publisher) and from Chrome.
PLAYER_PT_MAP = {96: 109, 97: 110, 98: 111, 99: 112, 100: 113, 101: 114, 102: 115}


class Failure(Exception):
    """An expected way for the test to fail: its message is the JSON line's error."""


def code_bits(n):
    v = (n & 0xFFFF) | ((((n & 0xFFFF) * 37 + 0x5A) & 0xFF) << 16)
    return [(v >> i) & 1 for i in range(COLS * ROWS)]


def read_counter(frame):
    """Counter from a decoded picture, or None when the check bits do not match."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    plane, w, h = frame.planes[0], frame.width, frame.height
    data, stride, v = bytes(plane), plane.line_size, 0
    for i in range(COLS * ROWS):
        cx, cy = (2 * (i % COLS) + 1) * w // (2 * COLS), (2 * (i // COLS) + 1) * h // (2 * ROWS)
        patch = [data[y * stride + x] for y in range(cy - 4, cy + 5) for x in range(cx - 4, cx + 5)]
        v |= (sum(patch) > 128 * len(patch)) << i
    n = v & 0xFFFF
    return n if code_bits(n) == [(v >> i) & 1 for i in range(COLS * ROWS)] else None


class CounterVideo(VideoStreamTrack):
    def __init__(self):
        super().__init__()
        self.count = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        bits, luma = code_bits(self.count), bytearray()
        for r in range(ROWS):
            line = bytes(235 if bits[r * COLS + x * COLS // W] else 16 for x in range(W))
            luma += line * ((r + 1) * H // ROWS - r * H // ROWS)
        frame = av.VideoFrame(W, H, "yuv420p")
        frame.planes[0].update(bytes(luma))
        for p in frame.planes[1:]:
            p.update(b"\x80" * p.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


class ToneAudio(AudioStreamTrack):
    """aiortc's paced silence track (8 kHz mono, 20 ms) with a 440 Hz tone written in."""

    phase = 0

    async def recv(self):
        frame = await super().recv()
        n, rate = frame.samples, frame.sample_rate
        tone = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * (self.phase + i) / rate)) for i in range(n)))
        self.phase += n
        frame.planes[0].update(tone.tobytes().ljust(frame.planes[0].buffer_size, b"\0"))
        return frame


def rms(frame):
    pcm = array.array("h", bytes(frame.planes[0])[: frame.samples * len(frame.layout.channels) * 2])
    return math.sqrt(sum(s * s for s in pcm) / max(1, len(pcm)))


def sdp_pts(sdp):
    """{kind: {pt: "name/clock[ apt=N]"}} from an SDP, to show each peer's numbering."""
    out, kind = {}, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
            out[kind] = {}
        elif m := re.match(r"a=rtpmap:(\d+) (\S+)", line):
            out[kind][m[1]] = m[2]
        elif m := re.match(r"a=fmtp:(\d+) apt=(\d+)", line):
            out[kind][m[1]] += f" apt={m[2]}"
    return out


def renumber(sdp, pt_map):
    """Consistently rewrite payload type numbers (m= lines, rtpmap, fmtp, rtcp-fb, apt=)."""
    def sub(pt):
        return str(pt_map.get(int(pt), pt))

    lines = []
    for line in sdp.splitlines():
        if line.startswith(("m=audio", "m=video")):
            head = line.split()[:3]
            line = " ".join(head + [sub(pt) for pt in line.split()[3:]])
        elif m := re.match(r"(a=(?:rtpmap|fmtp|rtcp-fb):)(\d+)(.*)", line):
            line = m[1] + sub(m[2]) + re.sub(r"(?<=apt=)\d+", lambda a: sub(a[0]), m[3])
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


class Signal:
    """One WCS signaling WebSocket: answers pings, buffers everything else for waiters."""

    def __init__(self, url, tag):
        self.url, self.tag, self.inbox, self.closed, self.ws = url, tag, [], False, None
        self.cond = asyncio.Condition()

    async def open(self):
        self.ws = await connect(self.url, open_timeout=5)
        self.reader = asyncio.create_task(self._read())
        await self.send("connection", {"appKey": "defaultApp", "mediaProviders": ["WebRTC"],
                                       "keepAlive": True, "clientVersion": "2.0"})
        await self.wait(lambda m: m["message"] == "getUserData", 5)

    async def send(self, message, obj):
        await self.ws.send(json.dumps({"message": message, "data": [obj]}))

    async def _read(self):
        try:
            async for text in self.ws:
                m = json.loads(text)
                if m.get("message") == "ping":
                    await self.send("pong", None)
                    continue
                log.info("%s <- %s", self.tag, text if len(text) < 300 else text[:300] + "...")
                async with self.cond:
                    self.inbox.append(m)
                    self.cond.notify_all()
        except ConnectionClosed as e:
            log.info("%s: socket closed: %s", self.tag, e)
        finally:
            async with self.cond:
                self.closed = True
                self.cond.notify_all()

    async def wait(self, pred, timeout):
        """First buffered message (removed from the buffer) for which pred is true."""
        def find():
            hit = next((m for m in self.inbox if pred(m)), None)
            if hit is None and self.closed:
                raise Failure(f"{self.tag}: signaling socket closed")
            return hit

        async with self.cond:
            try:
                m = await asyncio.wait_for(self.cond.wait_for(find), timeout)
            except asyncio.TimeoutError:
                raise Failure(f"{self.tag}: no expected message within {timeout}s") from None
            self.inbox.remove(m)
            return m

    async def close(self):
        if self.ws:
            await self.ws.close()


async def negotiate(sig, pc, name, publish, offer_munge=None, answer_munge=None):
    """Offer, send publishStream/playStream, apply the answer, wait for the final status."""
    offer = await pc.createOffer()
    sdp = offer_munge(offer.sdp) if offer_munge else offer.sdp
    await pc.setLocalDescription(RTCSessionDescription(sdp=sdp, type="offer"))  # gathers
    sid = str(uuid.uuid4())
    await sig.send("publishStream" if publish else "playStream", {
        "mediaSessionId": sid, "name": name, "published": publish, "hasAudio": True, "hasVideo": True,
        "status": "PENDING", "mediaProvider": "WebRTC", "sdp": pc.localDescription.sdp})
    want = "PUBLISHING" if publish else "PLAYING"
    is_ours = lambda m: m["data"] and (m["data"][0] == sid or (isinstance(m["data"][0], dict)  # noqa: E731
                                                               and m["data"][0].get("mediaSessionId") == sid))
    is_final = lambda m: m["message"] == "notifyStreamStatusEvent" and m["data"][0].get("status") in (  # noqa: E731
        want, "FAILED", "STOPPED", "UNPUBLISHED")
    m = await sig.wait(lambda m: is_ours(m) and (m["message"] == "setRemoteSDP" or is_final(m)), 10)
    if m["message"] != "setRemoteSDP":
        return sdp, None, m["data"][0]
    answer = m["data"][1]
    await pc.setRemoteDescription(RTCSessionDescription(answer_munge(answer) if answer_munge else answer, "answer"))
    status = (await sig.wait(lambda m: is_ours(m) and is_final(m), 10))["data"][0]
    return sdp, answer, status


async def consume(track, st, video_src):
    """Decode the player's frames and check their content against what was published."""
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return  # track ended: peer closed
        if track.kind == "audio":
            st["audioFrames"] += 1
            st["audioToneFrames"] += rms(frame) > 1000
            continue
        n = read_counter(frame)
        if n is None or n >= video_src.count or (st["counters"] and n <= st["counters"][1]):
            st["videoBad"] += 1  # unreadable, never published, or out of order
            continue
        st.setdefault("firstVideoMs", round((time.monotonic() - st["t0"]) * 1000))
        st["videoFrames"] += 1
        st["counters"] = [st["counters"][0] if st["counters"] else n, n]


async def run(args, res, pcs, sigs):
    pub_sig = Signal(args.ws, "pub")
    sigs.append(pub_sig)
    await pub_sig.open()
    video = res["video"] = CounterVideo()
    pub = RTCPeerConnection()
    pcs.append(pub)
    pub.addTransceiver(ToneAudio(), direction="sendonly")
    pub.addTransceiver(video, direction="sendonly")
    offer, answer, status = await negotiate(pub_sig, pub, args.name, True)
    res["publisherPts"] = {"offer": sdp_pts(offer), "answer": sdp_pts(answer or "")}
    if status.get("status") != "PUBLISHING":
        raise Failure(f"publish ended {status.get('status')}: {status.get('info')}")

    # Join late, so the publisher's first keyframe is long gone and a decodable picture
    # needs the server's keyframe request (aiortc's VP8 keyframe interval is 3000 frames).
    await asyncio.sleep(args.play_delay)
    play_name = args.name
    if args.relay_rest:
        play_name = args.name + "-relayed"
        body = json.dumps({"uri": args.relay_uri, "localStreamName": args.name, "remoteStreamName": play_name})
        req = urllib.request.Request(args.relay_rest.rstrip("/") + "/rest-api/pull/push", body.encode(),
                                     {"Content-Type": "application/json"})
        resp = await asyncio.to_thread(urllib.request.urlopen, req, timeout=10)
        log.info("relay push -> HTTP %s %s", resp.status, resp.read()[:200])

    play_sig = Signal(args.play_ws or args.ws, "play")
    sigs.append(play_sig)
    await play_sig.open()
    st = {"videoFrames": 0, "audioFrames": 0, "audioToneFrames": 0, "videoBad": 0, "counters": None}
    res["stats"] = st
    # --break-pts self-tests the checker: the player then expects PT numbers the server
    # does not send (as if the server forwarded without mapping), so nothing may decode.
    break_answer = (lambda s: renumber(s, {v: v + 10 for v in PLAYER_PT_MAP.values()})) if args.break_pts else None
    for attempt in range(8):  # a relayed stream shows up on the far server after a moment
        player = RTCPeerConnection()
        pcs.append(player)
        player.addTransceiver("audio", direction="recvonly")
        player.addTransceiver("video", direction="recvonly")
        player.on("track", lambda t: asyncio.ensure_future(consume(t, st, video)))
        st["t0"] = time.monotonic()
        offer, answer, status = await negotiate(play_sig, player, play_name, False,
                                                lambda s: renumber(s, PLAYER_PT_MAP), break_answer)
        res["playerPts"] = {"offer": sdp_pts(offer), "answer": sdp_pts(answer or "")}
        if status.get("status") == "PLAYING":
            break
        log.info("play attempt %d ended %s (%s)", attempt, status.get("status"), status.get("info"))
        await player.close()
        if not args.relay_rest or attempt == 7:
            raise Failure(f"play ended {status.get('status')}: {status.get('info')}")
        await asyncio.sleep(1)

    def enough():
        return st["videoFrames"] >= NEED_VIDEO and min(st["audioFrames"], st["audioToneFrames"]) >= NEED_AUDIO

    deadline = time.monotonic() + MEDIA_WAIT
    while time.monotonic() < deadline and not enough():
        await asyncio.sleep(0.2)
    if not enough():
        raise Failure(f"not enough media within {MEDIA_WAIT}s: {st['videoFrames']} verified video frames "
                      f"({st['videoBad']} bad), {st['audioFrames']} audio frames ({st['audioToneFrames']} with tone)")


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ws", required=True, help="publisher's signaling URL, ws://host:port")
    ap.add_argument("--play-ws", help="player's signaling URL (default: --ws)")
    ap.add_argument("--name", required=True, help="stream name to publish")
    ap.add_argument("--relay-rest", help="REST base of the publishing server; relays NAME to --relay-uri")
    ap.add_argument("--relay-uri", help="ws:// URL of the server to relay to (play there with --play-ws)")
    ap.add_argument("--play-delay", type=float, default=2.0, help="seconds between PUBLISHING and play")
    ap.add_argument("--break-pts", action="store_true", help="self-test: the player must fail")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    if bool(args.relay_rest) != bool(args.relay_uri):
        ap.error("--relay-rest and --relay-uri go together")
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(message)s",
                        level=logging.DEBUG if args.verbose else logging.WARNING)
    log.setLevel(logging.INFO)

    res, pcs, sigs = {"publisherPts": {}, "playerPts": {}}, [], []
    ok, error, t0 = False, "", time.monotonic()
    try:
        await asyncio.wait_for(run(args, res, pcs, sigs), HARD_TIMEOUT)
        ok = True
    except asyncio.TimeoutError as e:  # ours, or one from inside (e.g. the WebSocket connect)
        error = f"hard timeout {HARD_TIMEOUT}s" if time.monotonic() - t0 >= HARD_TIMEOUT else f"timeout: {e!r}"
    except Exception as e:  # noqa: BLE001 - whatever broke goes into the JSON line
        error = str(e) or type(e).__name__
        log.info("failed", exc_info=not isinstance(e, Failure))
    finally:
        for closer in [pc.close() for pc in pcs] + [s.close() for s in sigs]:
            try:
                await asyncio.wait_for(closer, 5)
            except Exception as e:  # noqa: BLE001 - cleanup is best effort
                log.info("close: %s", e)
    st = res.get("stats", {})
    res = {"ok": ok, "publisherPts": res["publisherPts"], "playerPts": res["playerPts"],
           "videoFrames": st.get("videoFrames", 0), "audioFrames": st.get("audioFrames", 0),
           "counters": st.get("counters"), "error": error,
           # extra detail: tone-carrying audio frames, undecodable/unverified pictures,
           # ms from playStream to the first verified picture, frames the publisher made
           "audioToneFrames": st.get("audioToneFrames", 0), "videoBadFrames": st.get("videoBad", 0),
           "firstVideoMs": st.get("firstVideoMs"), "publishedFrames": res["video"].count if "video" in res else None}
    print(json.dumps(res), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
