"""Decode-and-validate one input, in a worker process (no torch import: spawned workers start
fast). Any failure raises ConversionError with the reason that goes into the quarantine report.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np

from vidtempo import storage


class ConversionError(Exception):
    pass


def _short_side_size(h: int, w: int, short: int | None) -> tuple[int, int]:
    if not short:
        return h, w
    scale = short / min(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _jpeg(arr: np.ndarray, size: tuple[int, int], quality: int) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr)
    if (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _decode_all(data: bytes) -> tuple[list[np.ndarray], int, float]:
    """All frames (H, W, 3 uint8), the frame count the container claims, and the fps.
    decord first; PyAV when decord cannot read it."""
    try:
        import decord

        vr = decord.VideoReader(io.BytesIO(data), num_threads=1)
        claimed = len(vr)
        fps = float(vr.get_avg_fps())
        frames = []
        for start in range(0, claimed, 32):
            batch = vr.get_batch(list(range(start, min(claimed, start + 32)))).asnumpy()
            frames.extend(batch)
        return frames, claimed, fps
    except Exception as decord_error:  # noqa: BLE001 - any decoder failure: try the other one
        try:
            import av

            with av.open(io.BytesIO(data)) as container:
                stream = container.streams.video[0]
                claimed = int(stream.frames or 0)
                fps = float(stream.average_rate or 0)
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            return frames, claimed, fps
        except Exception as av_error:  # noqa: BLE001
            raise ConversionError(
                f"unreadable: decord: {str(decord_error)[:120]}; pyav: {str(av_error)[:120]}"
            ) from None


def _encode(
    frames: list[np.ndarray], size: tuple[int, int], fps: float, keyint: int | None
) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001) if fps else 25
        )
        stream.height, stream.width = size[0] - size[0] % 2, size[1] - size[1] % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        if keyint:
            stream.codec_context.gop_size = keyint
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(
                stream.width, stream.height
            )
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def convert_video(job: dict) -> dict:
    """job: path, video_id, label, expected_frames (or None), storage, short_side, keyint,
    jpeg_quality."""
    try:
        data = storage.read_bytes(job["path"])
    except OSError as exc:
        raise ConversionError(f"unreadable: {exc.strerror or exc}") from None
    if data is None:
        raise ConversionError("unreadable: no such file")
    if not data:
        raise ConversionError("unreadable: empty file (0 bytes)")
    frames, claimed, fps = _decode_all(data)
    if not frames:
        raise ConversionError("zero frames")
    if claimed and len(frames) != claimed:
        raise ConversionError(
            f"frame count: decoded {len(frames)} frames but the container says {claimed} (truncated?)"
        )
    expected = job.get("expected_frames")
    if expected is not None and abs(expected - len(frames)) > max(1, expected // 100):
        raise ConversionError(f"frame count: the list says {expected}, the video has {len(frames)}")
    h, w = frames[0].shape[:2]
    size = _short_side_size(h, w, job.get("short_side"))
    row = {
        "video_id": job["video_id"],
        "label": job["label"],
        "num_frames": len(frames),
        "fps": fps,
    }
    if job["storage"] == "frames":
        row["frames"] = [_jpeg(f, size, job.get("jpeg_quality", 90)) for f in frames]
        row["height"], row["width"] = size
    elif job.get("short_side") or job.get("keyint"):
        row["video"] = _encode(frames, size, fps, job.get("keyint"))
        row["height"], row["width"] = size[0] - size[0] % 2, size[1] - size[1] % 2
    else:
        row["video"] = data
        row["height"], row["width"] = h, w
    return row


def convert_rawframes(job: dict) -> dict:
    """job: dir, video_id, label, expected_frames, filename_tmpl, start_index, short_side."""
    from PIL import Image

    folder = job["dir"]
    present = set(storage.listdir(folder))  # one listing, also of a prefix in a bucket
    if not present:
        raise ConversionError(f"unreadable: no frame folder {folder}")
    n = job["expected_frames"]
    names = [job["filename_tmpl"].format(i + job["start_index"]) for i in range(n)]
    missing = [name for name in names if name not in present]
    if n == 0:
        raise ConversionError("zero frames")
    if missing:
        raise ConversionError(
            f"frame count: the list says {n}, {len(missing)} files missing (e.g. {missing[0]})"
        )
    frames = []
    for name in names:
        data = storage.read_bytes(storage.join(folder, name)) or b""
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                size = (img.height, img.width)
        except Exception as exc:  # noqa: BLE001 - any unreadable image
            raise ConversionError(f"unreadable: {name}: {exc}") from None
        frames.append(data)
    row = {"video_id": job["video_id"], "label": job["label"], "num_frames": n, "fps": 0.0}
    if job.get("short_side"):
        out_size = _short_side_size(*size, job["short_side"])
        frames = [
            _jpeg(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), out_size, 90)
            for b in frames
        ]
        size = out_size
    row["frames"], (row["height"], row["width"]) = frames, size
    return row


def run(job: dict) -> dict:
    return convert_rawframes(job) if job["kind"] == "rawframes" else convert_video(job)


def worker_loop(conn) -> None:
    """Serve jobs from the parent over a pipe until it sends None."""
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(("ok", run(job)))
        except ConversionError as exc:
            conn.send(("bad", str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported, never fatal for the run
            conn.send(("bad", f"unreadable: {type(exc).__name__}: {str(exc)[:200]}"))
