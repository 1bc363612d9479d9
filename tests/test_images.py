"""Good but unusual images decode to the picture, at every entry point (data.open_image is the one decoder):
each test writes a file whose pixels it knows and compares what comes back."""
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import anomalyr1
import data
import mvtec

RNG = np.random.default_rng(0)
WHITE = 255


def rgb(path):
    return np.asarray(anomalyr1.load_image(str(path)), np.int64)            # [H, W, 3]


def raw_png(path, pixels, color_type):
    """A PNG written byte by byte (PIL cannot save 16-bit RGB): pixels [H, W, C] big-endian uint16."""
    h, w = pixels.shape[:2]

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    rows = b"".join(b"\0" + pixels[i].astype(">u2").tobytes() for i in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_gray_and_bilevel(tmp_path):
    g = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    assert (rgb(tmp_path / "g.png") == g[..., None]).all()
    Image.fromarray(g > 127).save(tmp_path / "b.png")
    assert (rgb(tmp_path / "b.png") == np.where(g > 127, 255, 0)[..., None]).all()


def test_16_bit_gray_is_the_picture_not_white(tmp_path):
    v = RNG.integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode == "I;16"                                             # what PIL gives for 16-bit gray
    assert (rgb(tmp_path / "g16.png") == np.round(v / 257).astype(np.int64)[..., None]).all()


def test_16_bit_rgb(tmp_path):
    v = RNG.integers(0, 65536, (12, 9, 3))
    raw_png(tmp_path / "rgb48.png", v, color_type=2)
    assert np.abs(rgb(tmp_path / "rgb48.png") - v / 257).max() <= 1        # PIL keeps the high byte


def test_16_bit_gray_alpha(tmp_path):
    v = RNG.integers(0, 65536, (12, 9, 2))
    raw_png(tmp_path / "la32.png", v, color_type=4)
    gray, alpha = v[..., 0] / 257, v[..., 1] / 65535
    assert np.abs(rgb(tmp_path / "la32.png") - (gray * alpha + WHITE * (1 - alpha))[..., None]).max() <= 2


def test_rgba_and_la_are_composited_on_white(tmp_path):
    a = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    a[0, 0, 3], a[0, 1, 3] = 0, 255                                          # fully transparent, fully opaque
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    alpha = a[..., 3:] / 255
    out = rgb(tmp_path / "rgba.png")
    assert np.abs(out - (a[..., :3] * alpha + WHITE * (1 - alpha))).max() <= 1
    assert (out[0, 0] == WHITE).all() and (out[0, 1] == a[0, 1, :3]).all()
    la = RNG.integers(0, 256, (16, 16, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    alpha = la[..., 1] / 255
    assert np.abs(rgb(tmp_path / "la.png") - (la[..., 0] * alpha + WHITE * (1 - alpha))[..., None]).max() <= 1


def test_palette_with_and_without_transparency(tmp_path):
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    idx = RNG.integers(0, 256, (10, 14), dtype=np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette.ravel().tolist())
    im.save(tmp_path / "p.png")
    assert (rgb(tmp_path / "p.png") == palette[idx]).all()
    im.save(tmp_path / "pt.png", transparency=int(idx[0, 0]))                # one palette entry is transparent
    out, clear = rgb(tmp_path / "pt.png"), idx == idx[0, 0]
    assert (out[clear] == WHITE).all() and (out[~clear] == palette[idx][~clear]).all()


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (32, 32), (10, 60, 120, 40)).save(tmp_path / "c.jpg", quality=95)
    expected = np.asarray(Image.new("CMYK", (1, 1), (10, 60, 120, 40)).convert("RGB"))[0, 0]
    assert np.abs(rgb(tmp_path / "c.jpg") - expected).max() <= 3


def test_6000x6000_is_downscaled_to_the_paper_size(tmp_path):
    """36 MP (under PIL's 89 MP warning) decodes and is fitted into 1000x800 (§4.1), aspect kept."""
    ramp = (np.arange(6000) * 255 // 5999).astype(np.uint8)                  # [6000]
    a = np.empty((6000, 6000, 3), np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = ramp[None, :], ramp[:, None], ramp[None, ::-1]
    Image.fromarray(a).save(tmp_path / "big.png", compress_level=1)
    out = anomalyr1.load_image(str(tmp_path / "big.png"))
    assert out.size == (800, 800)
    expected = np.asarray(Image.fromarray(a).resize((800, 800), Image.BICUBIC), np.int64)
    assert (np.asarray(out, np.int64) == expected).all()


def test_float_and_bomb_are_refused_in_one_line(tmp_path):
    """32-bit float has no agreed range; over 179 MP (2 x PIL's MAX_IMAGE_PIXELS) is refused before decoding."""
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="f.tiff: 32-bit float"):
        anomalyr1.load_image(str(tmp_path / "f.tiff"))
    raw_png(tmp_path / "bomb.png", np.zeros((1, 1, 1), np.uint16), color_type=0)
    b = bytearray((tmp_path / "bomb.png").read_bytes())                     # claim 20000 x 10000 in IHDR
    b[16:24] = struct.pack(">II", 20000, 10000)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    (tmp_path / "bomb.png").write_bytes(bytes(b))
    with pytest.raises(ValueError, match="bomb.png: too large to decode") as e:
        anomalyr1.load_image(str(tmp_path / "bomb.png"))
    assert "\n" not in str(e.value) and "downscale" in str(e.value)


def test_16_bit_mask_with_small_labels(tmp_path):
    m = np.zeros((8, 8), np.uint16)
    m[2:4, 5:7] = 1                                                          # label 1: v / 257 would round to 0
    Image.fromarray(m).save(tmp_path / "m.png")
    assert (data._read_mask(str(tmp_path / "m.png")) == (m > 0)).all()


def _folder(root, scale, mode):
    """A one-category MVTec folder of gray images; scale 257 + mode I;16 stores the same picture in 16 bits."""
    for sub, seed in [("train/good/000", 1), ("train/good/001", 2), ("train/good/002", 3),
                      ("test/good/000", 4), ("test/hole/000", 5)]:
        (root / "cat" / sub).parent.mkdir(parents=True, exist_ok=True)
        g = np.random.default_rng(seed).integers(0, 256, (40, 40)).astype(np.uint16)
        Image.fromarray((g * scale).astype(np.uint16 if scale > 1 else np.uint8)).save(root / "cat" / f"{sub}.png")
        with Image.open(root / "cat" / f"{sub}.png") as im:
            assert im.mode == mode
    mask = np.zeros((40, 40), np.uint16)
    mask[5:15, 20:30] = 1 * scale
    (root / "cat/ground_truth/hole").mkdir(parents=True)
    Image.fromarray(mask.astype(np.uint16 if scale > 1 else np.uint8)).save(root / "cat/ground_truth/hole/000_mask.png")


def test_build_reads_16_bit_sets_as_their_8_bit_twins(tmp_path):
    """Template ranking, masks and boxes in `build` decode through the same path: a 16-bit copy of a set gives the
    same questions, templates and boxes as the 8-bit original."""
    _folder(tmp_path / "a8" / "ds", 1, "L")
    _folder(tmp_path / "a16" / "ds", 257, "I;16")
    q8 = mvtec.build(str(tmp_path / "a8" / "ds"), str(tmp_path / "q8.json"))
    q16 = mvtec.build(str(tmp_path / "a16" / "ds"), str(tmp_path / "q16.json"))
    assert q8 == q16 and json.loads((tmp_path / "q16.json").read_text()) == q16
    assert any(t["type"] == data.GROUNDING for t in q16["ds/cat/test/hole/000.png"]["conversation"])
    assert len(data.load_mmad(str(tmp_path / "q16.json"), str(tmp_path / "a16"))) > 0
