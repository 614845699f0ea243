#!/usr/bin/env python3
"""Generate the hotline's voice prompts (8 kHz, 16-bit, mono PCM WAV).

Speech is synthesised with espeak-ng (Mandarin) and converted with sox; the
hold-music loop is synthesised with sox alone.  Prompt lists for the retired
(整体并入) and dual-number (双号并行) lines are read from
dialplans/merged.toml and dialplans/dual.toml.

Every run regenerates every prompt; output is deterministic (same tools and
inputs give byte-identical files).  Files are written atomically.

Usage:  python3.11 scripts/gen-prompts.py [--out DIR] [--dialplans DIR] [--voice V]
Requires: python >= 3.11 (tomllib), espeak-ng with Mandarin data, sox.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    sys.exit("gen-prompts: Python 3.11+ is required (tomllib); run it with python3.11")

REPO = Path(__file__).resolve().parent.parent

RATE = 8000
SPEED = 160          # espeak-ng words per minute
SPEECH_PEAK_DB = -3  # norm target for speech
MUSIC_PEAK_DB = -12  # norm target for hold music
TAIL_PAD = 0.2       # seconds of silence appended to speech prompts
DIGIT_PAD = 0.05     # digits are concatenated at run time: keep them tight

# Telephone-style digit reading: every digit on its own, 1 read as 幺 (yāo).
DIGITS = "零幺二三四五六七八九"
DIGIT_MAP = str.maketrans({str(i): DIGITS[i] for i in range(10)})

# Polyphonic characters espeak-ng's Mandarin dictionary gets wrong.  Only used
# with the pinyin voice, where inline pinyin with a tone number is read as such.
PRON_FIXES = [
    ("重新", "chong2新"),   # otherwise zhòngxīn
    ("会计", "kuai4计"),    # otherwise huìjì
    ("林地", "林di4"),      # otherwise lín de
]

FIXED = [
    ("welcome", "您好，欢迎致电12345政务服务便民热线。"),
    ("menu-main", "政策咨询请按1，投诉举报请按2，企业服务请按3，人工服务请按0。"
                  "如遇紧急情况，请挂机后拨打110、119、120或122。"),
    ("menu-invalid", "您的输入有误，请重新选择。"),
    ("menu-timeout", "您没有输入，请重新选择。"),
    ("please-hold", "座席正忙，请您耐心等待，我们将尽快为您服务。"),
    ("sorry-busy", "很抱歉，目前座席全忙，请您稍后再拨。再见。"),
    ("overload-busy", "您好，12345热线当前来电较多，线路繁忙，请您稍后再拨。再见。"),
    ("goodbye", "感谢您的来电，再见。"),
    ("number-retired", "您拨打的号码已停止使用，请改拨12345政务服务便民热线。再见。"),
    ("transition/you-dialled", "您拨打的"),
    ("transition/merged", "已整体并入12345政务服务便民热线，正在为您转接。"),
    ("agent/logged-in", "座席已签入。"),
    ("agent/logged-out", "座席已签出。"),
    ("agent/paused", "座席已暂停。"),
    ("agent/unpaused", "座席已恢复服务。"),
    ("agent/refused", "操作未成功。"),
    ("queue/ahead", "您前面还有"),
    ("queue/callers", "位来电者在等候。"),
    ("queue/next", "您是下一位，请稍候。"),
    ("queue/wait", "预计等待时间约"),
    ("queue/minutes", "分钟。"),
    ("queue/more-than", "超过"),
    ("queue/seat-lost", "很抱歉，通话中断了。正在为您重新接通座席，您将优先得到服务，请稍候。"),
    ("survey", "请您对本次服务进行评价：满意请按1，基本满意请按2，不满意请按3。"),
    ("survey-thanks", "感谢您的评价，再见。"),
    ("callback", "现在座席全忙，我们已记录您的来电号码，工作人员将尽快给您回电。再见。"),
    ("callback/offer", "如需挂机等待回拨，请按9，您的排队位置将为您保留。"),
    ("callback/requested", "好的，您的排队位置已为您保留，轮到您时我们将回拨您的电话。再见。"),
    ("callback/dialling", "回拨，正在呼叫市民。"),
    ("callback/connected", "12345热线回拨，正在为您接通。"),
    ("revisit/intro", "您好，这里是12345政务服务便民热线回访，您反映的事项已办结。"),
    ("confidential/on", "已为您开启保密服务，您的号码将不会显示给话务员。"),
    ("repeat/reminder", "您近期已多次来电，您反映的事项正在办理中，如有新的情况请向话务员说明。"),
    ("transfer/connecting", "正在为您转接，请稍候。"),
    ("transfer/dialling", "正在呼叫转接方。"),
    ("transfer/failed", "转接未成功，已回到原通话。"),
    ("transfer/unknown", "转接号码无效。"),
    ("transfer/sorry", "转接未成功，请您稍后再拨。再见。"),
]

# Counting words, composed at run time into 1..99 (二十三 = 二 十 三); 两 before a measure word.
COUNT = [(str(i), w) for i, w in enumerate("零一二三四五六七八九十")] + [("liang", "两")]

# Hold music: a gentle pentatonic tune, 40 steps of 0.5 s = 20 s; 0 = rest.
NOTE_LEN = 0.5
NOTES = {"C4": 261.63, "D4": 293.66, "E4": 329.63, "G4": 392.00, "A4": 440.00,
         "C5": 523.25, "D5": 587.33, "E5": 659.25, "G5": 783.99}
TUNE = ("E5 D5 C5 A4 G4 A4 C5 0 "
        "D5 E5 G5 E5 D5 C5 D5 0 "
        "E5 D5 C5 A4 G4 E4 G4 0 "
        "A4 C5 D5 E5 D5 C5 A4 0 "
        "G4 A4 C5 D5 E5 D5 C5 0").split()


def die(msg: str) -> None:
    sys.exit(f"gen-prompts: error: {msg}")


def run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        die(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.strip()}")


def check_tools(voice: str | None) -> str:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        die(f"missing required tool(s): {', '.join(missing)} "
            f"(install with: apt-get install -y espeak-ng sox)")
    r = subprocess.run(["espeak-ng", "--voices=cmn"], capture_output=True, text=True)
    voices = {line.split()[1] for line in r.stdout.splitlines()[1:] if len(line.split()) > 1}
    if voice:
        if voice not in voices:
            die(f"espeak-ng voice {voice!r} not available (have: {sorted(voices) or 'none'})")
        return voice
    # The plain "cmn" voice reads the pinyin it derives from hanzi as English
    # (e.g. 一 -> "yi one"), which is unintelligible; "cmn-latn-pinyin" reads
    # it as Mandarin.  Prefer it, fall back to "cmn" with a warning.
    if "cmn-latn-pinyin" in voices:
        return "cmn-latn-pinyin"
    if "cmn" in voices:
        print("gen-prompts: warning: voice cmn-latn-pinyin missing, using cmn "
              "(pronunciation will be poor)", file=sys.stderr)
        return "cmn"
    die("espeak-ng has no Mandarin (cmn) voice; install espeak-ng-data")
    return ""


def spoken(text: str, voice: str) -> str:
    text = text.translate(DIGIT_MAP)
    if voice == "cmn-latn-pinyin":
        for a, b in PRON_FIXES:
            text = text.replace(a, b)
    return text


def digits_of(number: str) -> str:
    return number.translate(DIGIT_MAP)


def out_path(root: Path, pid: str) -> Path:
    p = root / (pid + ".wav")
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def commit(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def duration(path: Path) -> float:
    return (path.stat().st_size - 44) / (2 * RATE)


def speak(root: Path, work: Path, voice: str, pid: str, text: str, pad: float) -> Path:
    final = out_path(root, pid)
    raw = work / "raw.wav"
    run(["espeak-ng", "-b", "1", "-v", voice, "-s", str(SPEED), "-w", str(raw), spoken(text, voice)])
    tmp = final.with_name("." + final.stem + ".tmp.wav")
    # Trim leading and trailing silence, resample, normalise, pad the tail.
    run(["sox", "-R", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
         str(tmp),
         "silence", "1", "0.02", "1%", "reverse", "silence", "1", "0.02", "1%", "reverse",
         "rate", str(RATE), "norm", str(SPEECH_PEAK_DB), "pad", "0", str(pad)])
    commit(tmp, final)
    print(f"wrote {final.relative_to(root.parent) if root.parent in final.parents else final}"
          f"  {duration(final):5.2f}s  {text}")
    return final


def hold_music(root: Path, work: Path) -> Path:
    final = out_path(root, "hold-music")
    parts = []
    for i, note in enumerate(TUNE):
        part = work / f"note{i:02d}.wav"
        if note == "0":
            run(["sox", "-R", "-D", "-r", str(RATE), "-c", "1", "-n", "-b", "16", str(part),
                 "trim", "0", str(NOTE_LEN)])
        else:
            f = NOTES[note]
            # Soft sine with a quiet octave overtone and a decaying envelope.
            run(["sox", "-R", "-D", "-r", str(RATE), "-c", "2", "-n", "-c", "1", "-b", "16", str(part),
                 "synth", str(NOTE_LEN), "sine", f"{f}", "sine", f"{2 * f:.2f}",
                 "remix", "1v0.8,2v0.15", "fade", "l", "0.015", str(NOTE_LEN), str(NOTE_LEN - 0.03)])
        parts.append(str(part))
    tmp = final.with_name("." + final.stem + ".tmp.wav")
    run(["sox", "-R", "-D", *parts, "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
         str(tmp), "norm", str(MUSIC_PEAK_DB)])
    commit(tmp, final)
    print(f"wrote {final.relative_to(root.parent)}  {duration(final):5.2f}s  (sox synth, {len(TUNE)} notes)")
    return final


def load(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        die(f"dial plan not found: {path}")
    with path.open("rb") as fh:
        try:
            entries = tomllib.load(fh).get(key, [])
        except tomllib.TOMLDecodeError as e:
            die(f"{path}: {e}")
    for e in entries:
        n = e.get("number", "")
        if not (isinstance(n, str) and n.isdigit()) or not e.get("name"):
            die(f"{path}: bad [[{key}]] entry: {e}")
    return entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "prompts", help="output directory (default: %(default)s)")
    ap.add_argument("--dialplans", type=Path, default=REPO / "dialplans",
                    help="directory with merged.toml and dual.toml (default: %(default)s)")
    ap.add_argument("--voice", default=None, help="espeak-ng voice (default: cmn-latn-pinyin, else cmn)")
    args = ap.parse_args()

    voice = check_tools(args.voice)
    merged = load(args.dialplans / "merged.toml", "merged")
    dual = load(args.dialplans / "dual.toml", "dual")
    root = args.out.resolve()
    root.mkdir(parents=True, exist_ok=True)
    print(f"gen-prompts: voice={voice} speed={SPEED} -> {root}")

    written = []
    with tempfile.TemporaryDirectory(prefix="gen-prompts.") as w:
        work = Path(w)
        for pid, text in FIXED:
            written.append(speak(root, work, voice, pid, text, TAIL_PAD))
        for d in range(10):
            written.append(speak(root, work, voice, f"digits/{d}", DIGITS[d], DIGIT_PAD))
        for name, word in COUNT:
            written.append(speak(root, work, voice, f"count/{name}", word, DIGIT_PAD))
        for e in merged:
            written.append(speak(root, work, voice, f"names/{e['number']}", e["name"], TAIL_PAD))
            # A province whose list words the line differently gets its own name prompt
            # (names/<province>/<number>), which the dialplan prefers under that profile.
            for prov, alt in sorted(e.get("as_in", {}).items()):
                if alt.get("name") and alt["name"] != e["name"]:
                    written.append(speak(root, work, voice, f"names/{prov}/{e['number']}", alt["name"], TAIL_PAD))
        for e in dual:
            num, name = e["number"], e["name"]
            if name.startswith(num):          # e.g. "12315市场监管投诉举报热线": say the number once
                name = name[len(num):].lstrip()
            pid = e.get("greeting") or f"greetings/{num}"
            written.append(speak(root, work, voice, pid, f"您好，欢迎致电{digits_of(num)}{name}。", TAIL_PAD))
        written.append(hold_music(root, work))

    # Report (but never delete) files in generated folders that no longer
    # correspond to a dial-plan entry; recorded overrides live elsewhere.
    keep = {p.resolve() for p in written}
    for sub in ("names", "greetings", "digits", "count"):
        for p in sorted((root / sub).glob("*.wav")):
            if p.resolve() not in keep:
                print(f"gen-prompts: note: stale prompt not in dial plans: {p.relative_to(root)}", file=sys.stderr)
    print(f"gen-prompts: {len(written)} prompts written")


if __name__ == "__main__":
    main()
