"""Rewards for GRPO on multiple-choice anomaly questions: ROAM (AnomalyR1, arXiv 2504.11914, §3.3 eq. (7)
and the tiers of §4.5), accuracy, format, the LR-IAD rare-defect reward (arXiv 2504.19524) and box IoU.

A completion is scored from text alone:  <think> reasoning </think> <answer> choice </answer>.
`extract_choice` decides which option letter a piece of text concludes; `judge` reads a completion once
and gives every reward built on it, plus the reasoning/answer consistency that grpo.py and eval.py report.
Pure python on purpose: rewards must never raise on whatever the policy samples, and must be
checkable by hand. Usage:  python roam.py "<think>..</think><answer>B</answer>" --answer B --options "A=Yes.,B=No."
"""
import bisect
import collections
import dataclasses
import functools
import json
import math
import re
import sys
import unicodedata
from typing import NamedTuple

import cli  # the standard library only, like this module

# ROAM tiers, §4.5: "0 ... when the reasoning process and answer are inconsistent; 0.05 ... when both a
# reasoning process and an answer are present, regardless of correctness; 0.1 ... when the reasoning
# process and answer are consistent; 0.8 ... for a correct answer alone; 1.0 ... when the reasoning
# process includes a derivation leading to the correct answer."
ROAM_CORRECT_WITH_REASONING = 1.0   # reasoning concludes gold, answer = gold
ROAM_CORRECT_ANSWER_ONLY = 0.8      # reasoning concludes nothing, answer = gold
ROAM_CONSISTENT_WRONG = 0.1         # reasoning and answer agree on a wrong option
ROAM_ANSWER_ONLY_WRONG = 0.05       # reasoning concludes nothing, answer is a wrong option
ROAM_INCONSISTENT = 0.0             # reasoning and answer disagree (or nothing is concluded at all)

# LR-IAD rare-defect reward defaults, see rare_defect_reward.
RARE_ALPHA = 1.0
RARE_GAMMA = 2.0


class Parsed(NamedTuple):
    think: str | None     # stripped content of the last <think>...</think>, or None
    answer: str | None    # stripped content of the last <answer>...</answer>, or None
    well_formed: bool     # exactly one think block, then one non-empty answer block, nothing else


_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _last_block(text: str, name: str) -> str | None:
    # str.rfind instead of a `<t>(.*?)</t>` regex: the regex rescans to the end of the text for every
    # unclosed opening tag, which is quadratic on junk like "<think>" * 20000.
    close = text.rfind(f"</{name}>")
    if close < 0:
        return None
    open_ = text.rfind(f"<{name}>", 0, close)
    return None if open_ < 0 else text[open_ + len(name) + 2:close].strip()


def parse(text: str) -> Parsed:
    text = text if isinstance(text, str) else ""
    think, answer = _last_block(text, "think"), _last_block(text, "answer")
    s = text.strip()
    # One of each tag, in order, only whitespace between the blocks: a second answer block, text after
    # </answer> or an empty answer are all ways to hedge, so none of them count as the format.
    well_formed = (all(s.count(t) == 1 for t in _TAGS) and s.startswith("<think>") and s.endswith("</answer>")
                   and s.index("</think>") < s.index("<answer>")
                   and s[s.index("</think>") + 8:s.index("<answer>")].strip() == "" and bool(answer))
    return Parsed(think, answer, well_formed)


# ---------------------------------------------------------------- which option does a text conclude?
# Read the way a careful person reads an answer. Every mention of an option (its letter, or its text) is
#   explicit  when it stands as a conclusion: after a cue ("the answer is B", "so B", "I choose (B)",
#             "答案是B"), before a verdict ("option B is correct"), or alone as the text's last sentence;
#   bare      otherwise ("I see a stain near the rim", "A at first, but on reflection B");
#   dropped   when negated ("not B", "no scratch", "A, C and D are unlikely") or when it only restates an
#             option ("A. Yes. B. No." as a list).
# The last explicit mention wins; bare mentions decide only where there is none. Option texts that are
# ordinary words (Yes/No, ...) never count as bare: "No other defects", "no doubt", "Yes, I will look" are
# words inside a sentence. They count after a cue ("so yes", "The answer is no."), as the text's first or
# last sentence alone ("No." ... / ... "No."), or opening an answer ("Yes, there is a crack").
# Each mention looks at most _WINDOW characters either side with anchored regexes: linear in the text.
_WINDOW = 60
_ORDINARY = frozenset("yes no none true false maybe normal good correct incorrect right wrong both neither all one"
                      .split())
# Letter token: not glued to a Latin word or digit ("PCB", "3D", "A-D", "B's", "E.g."); CJK around it is fine
# ("答案是A。"). Letters are case-sensitive: a lowercase "a" is always the article.
_LETTER = r"(?<![A-Za-z0-9_-])({})(?![A-Za-z0-9_]|[-'’.][A-Za-z0-9])"
# "A" followed by a lowercase word at the start of a sentence is the article ("A small hole is visible.",
# "Yes. A crack ..."); mid-sentence ("I choose A because") or after a cue ("Answer: A because") it is the option.
_WORD_AHEAD = re.compile(r"\s+[a-z]")
# ... unless a verb follows: an article is followed by its noun ("A crack"), an option by what it is ("A is correct")
_VERB_AHEAD = re.compile(r"\s+(?:is|was|seems|looks|appears|fits|matches|describes|applies|would|should|must|"
                         r"could|might|can|will|best)\b")
_CUE_BEHIND = re.compile(r"(?i)\b(?:option|choice|answer)(?:\s+is)?[*\s]*[:：]?[*\s]*[(\[]?\s*$")
# A cue right before the mention: "answer: ", "the answer is **", "correct option would be (", "so ", "I choose".
_TIGHT_CUE = re.compile(
    r"(?i)(?:\banswer|\b(?:answer|option|choice)s?\s+(?:is|would\s+be|should\s+be|must\s+be|will\s+be|"
    r"here\s+is|seems\s+to\s+be|appears\s+to\s+be)|\b(?:so|therefore|thus|hence|but|say|choose|chose|pick|select|"
    r"go\s+with|opt\s+for)|答案(?:是|为|為|应该是|應該是)?|所以|因此|故|选择?|選擇?)"
    r"[\s*:：,，(\[“\"'「]*(?:(?:option|choice)[\s*(\[]*)?$")
# A cue anywhere earlier in the same sentence: "Therefore, given the crack on the cap, D."
_LOOSE_CUE = re.compile(r"(?i)\b(?:so|therefore|thus|hence|conclude|conclusion|choose|chose|pick|select|"
                        r"final\s+answer|answer\s+is)\b|答案|所以|因此|故|选")
_VERDICT_AHEAD = re.compile(r"(?i)[\s*)\]」]*(?:is|seems|appears|looks)\s+(?:to\s+be\s+)?(?:the\s+)?(?:most\s+)?"
                            r"(?:correct|right|best|accurate|appropriate|answer)\b")
# "B rather than A", "B instead of A" and "B over A" reject A. "over" only right before the mention ("over option
# A" too): with words between it is spatial ("over the center", "runs over the cap so D").
# A negation reaches over at most 3 words ("not a deep B"), and never past a conclusion word: in "no scratch so B"
# or "not A but B" the "so"/"but" starts what is concluded.
_NEGATION_BEHIND = re.compile(r"(?i)(?:(?:\b(?:not|no|never|nor|neither|without|than|except|excluding|rule\s+out|"
                              r"instead\s+of)|n't|不是|并非|並非|非)"
                              r"(?:\s+(?!(?:so|but|therefore|thus|hence|yet)\b)[\w-]+){0,3}?"
                              r"|\bover(?:\s+(?:option|choice))?)[\s*(\[]*$")
_NEGATION_AHEAD = re.compile(r"(?i)[\s*)\]」]*(?:(?:,|\band\b|\bor\b)\s*(?:options?\s*)?\(?[A-Z]\)?[\s*)]*)*"
                             r"(?:\b(?:is|are|was|were|seems?|appears?|looks?)\b\s*)?(?:\b(?:each|all|both|also|"
                             r"clearly|definitely|probably|likely)\s+)?(?:not\b|n't|unlikely|incorrect|wrong|"
                             r"ruled\s+out|excluded|eliminated|impossible)")
_ANSWERING_AHEAD = re.compile(r"(?i)\s*[,，]\s*(?:there|it|this|that|they|the|its)\b")   # "Yes, there is ..."
_CLAUSE_END_AHEAD = re.compile(r"[\s*\"'」)\]]*(?:[.,;:!?。，；！？\n]|$)")
_SENTENCE_END_AHEAD = re.compile(r"[\s*\"'」)\]]*(?:[.!?。！？\n]|$)")
_BREAKS = ".!?。！？\n"   # what ends a sentence
_JOIN_MAX = 3
_JOINER = re.compile(r"[ \t-]{0,%d}" % _JOIN_MAX)   # what joins two words into one phrase ("top left", "top-left")
_WORD_BEHIND, _WORD_AFTER = re.compile(r"(\w+)[ \t-]{1,%d}$" % _JOIN_MAX), re.compile(r"[ \t-]{1,%d}(\w+)" % _JOIN_MAX)
# MMAD's Defect Localization options are places on a 3×3 grid ("Top left.", "Center."): words that compose
_PLACES = {"top", "bottom", "left", "right", "center", "centre", "middle", "upper", "lower"}
_EDGE = " \t\r\n*_`\"'“”「」()[]（）#>-.,;:!?。，！？：；"   # what may stand around a conclusion alone


@functools.lru_cache(maxsize=1024)
def _patterns(options: tuple) -> tuple:
    letters = [k for k, _ in options if k]
    letter_re = re.compile(_LETTER.format("|".join(map(re.escape, sorted(letters, key=len, reverse=True))))) \
        if letters else None
    text_res, restate = [], {}
    for k, v in options:
        words = str(v).strip().rstrip(".!?;:,。").strip().lower().split()
        if words:   # "Top left." matches "top  left", "TOP LEFT" but not "stop left" or "eyes" for "Yes."
            body = r"\s+".join(map(re.escape, words))
            text_res.append((k, re.compile(r"(?<!\w)" + body + r"(?!\w)", re.I), " ".join(words) in _ORDINARY))
            # a letter followed by its own text ("B. No", "(B): No", "**B** No") restates the option
            restate[k] = re.compile(r"[\s*)\]]*[.:：)\-–]?[\s*]*" + body + r"(?!\w)", re.I)
    return letter_re, text_res, restate


def _is_article(text: str, start: int, end: int) -> bool:
    if text[start:end] != "A" or not _WORD_AHEAD.match(text, end) or _VERB_AHEAD.match(text, end):
        return False
    before = text[max(0, start - 40):start]
    if _CUE_BEHIND.search(before):
        return False
    before = before.rstrip()
    return not before or not (before[-1].isalnum() or before[-1] == ",")


def _sentence_before(text: str, start: int) -> tuple[str, bool]:
    """The part of the current sentence before `start` (at most _WINDOW chars), and whether that sentence
    starts within the window (so the mention may open it)."""
    window = text[max(0, start - _WINDOW):start]
    cut = max(window.rfind(ch) for ch in _BREAKS)
    return (window[cut + 1:], True) if cut >= 0 else (window, start <= _WINDOW)


def _classify(text, start, end, lo, hi, ordinary) -> int | None:
    """2 = explicit, 1 = bare, None = not a conclusion, for the mention text[start:end]; [lo, hi) is the
    text without its edge punctuation, for "alone as the first / last sentence"."""
    before, opens = _sentence_before(text, start)
    ahead = text[end:end + _WINDOW]
    if _NEGATION_BEHIND.search(before[-_WINDOW // 2:]) or _NEGATION_AHEAD.match(ahead):
        return None
    alone_before = opens and not before.strip(_EDGE)
    last = end >= hi
    if alone_before and (last or (ordinary and start <= lo and _SENTENCE_END_AHEAD.match(ahead))):
        return 2   # "B", "(B)", "No." as the whole text or its last sentence; "No." opening it
    tight = _TIGHT_CUE.search(before)
    if ordinary:   # a plain word counts only as a conclusion that ends its clause: "so yes.", not "so no other"
        if tight and _CLAUSE_END_AHEAD.match(ahead):
            return 2
        return 2 if alone_before and _ANSWERING_AHEAD.match(ahead) else None
    if tight or _LOOSE_CUE.search(before) or _VERDICT_AHEAD.match(ahead):
        return 2
    return 1


def _whole_phrases(text: str, texts: list) -> list:
    """The option-text mentions that stand as a whole phrase: not inside a longer option's text, not touching
    another option's text ("Top left", where "Top." and "Left." are options but "Top left." is not, names
    neither; read as "Left." it would score a place the reply never said), and a place not touching another
    place word ("top left" is not "Left.", "top-right corner" not "Top.")."""
    reach = max((m[1] - m[0] for m in texts), default=0) + _JOIN_MAX

    def near(m, among, starts):   # only mentions within reach can overlap or touch m: junk stays linear
        return among[bisect.bisect_left(starts, m[0] - reach):bisect.bisect_right(starts, m[1] + _JOIN_MAX)]

    def inside(m, n):
        return n[0] <= m[0] and m[1] <= n[1] and n[1] - n[0] > m[1] - m[0]

    def touching(m, n):
        gap = text[m[1]:n[0]] if m[1] <= n[0] else text[n[1]:m[0]] if n[1] <= m[0] else None
        return gap is not None and _JOINER.fullmatch(gap) is not None

    def part_of_a_place(m):
        if not set(text[m[0]:m[1]].lower().split()) <= _PLACES:
            return False
        before, after = _WORD_BEHIND.search(text, max(0, m[0] - 40), m[0]), _WORD_AFTER.match(text, m[1])
        return any(w and w.group(1).lower() in _PLACES for w in (before, after))

    texts = sorted(texts)
    starts = [m[0] for m in texts]
    kept = [m for m in texts if not any(inside(m, n) for n in near(m, texts, starts))]
    starts = [m[0] for m in kept]
    return [m for m in kept if not part_of_a_place(m)
            and not any(n[2] != m[2] and touching(m, n) for n in near(m, kept, starts))]


def extract_choice(text: str, options: dict) -> str | None:
    """The option letter `text` concludes: the last explicit mention of an option, else the last bare one
    (rules above). A letter is a key of `options` ("B", "(B)", "**B**"); a text is an option's value, matched
    case-insensitively on word boundaries ("No.", "top  left"), and only as a whole phrase (_whole_phrases:
    "deep scratch" is "Deep scratch." where both it and "Scratch." are options, and "Top left" is neither "Top."
    nor "Left."). Ties on the end position go to the longer match."""
    if not isinstance(text, str) or not text or not options:
        return None
    # NFKC once, before any offset is taken: full-width "答案是Ｂ", "（Ｂ）", "ｎｏ" read as "答案是B", "(B)", "no"
    text = unicodedata.normalize("NFKC", text)
    letter_re, text_res, restate = _patterns(tuple((str(k), unicodedata.normalize("NFKC", str(v)))
                                                   for k, v in options.items()))
    stripped = text.strip(_EDGE)
    lo = text.find(stripped[:1]) if stripped else 0
    hi = lo + len(stripped)
    best = {1: None, 2: None}   # rank -> (end, length, letter)
    covered = set()             # starts of option texts that only label a letter ("B. No." -> "No")
    mentions = []
    if letter_re is not None:
        for m in letter_re.finditer(text):
            start, end, letter = m.start(1), m.end(1), m.group(1)
            if _is_article(text, start, end):
                continue
            r = restate.get(letter)
            label = r.match(text, end) if r else None
            if label:
                covered.add(label.end())
            mentions.append((start, label.end() if label else end, letter, False, bool(label)))
    texts = [(m.start(), m.end(), letter, ordinary) for letter, pattern, ordinary in text_res
             for m in pattern.finditer(text) if m.end() not in covered]
    mentions += [(start, end, letter, ordinary, False) for start, end, letter, ordinary in _whole_phrases(text, texts)]
    for start, end, letter, ordinary, restated in mentions:
        rank = _classify(text, start, end, lo, hi, ordinary)
        if rank is None or (restated and rank == 1):   # a restated option is never a bare conclusion
            continue
        best[rank] = max(best[rank] or (-1, 0, ""), (end, end - start, letter))
    top = best[2] or best[1]
    return top[2] if top else None


def _gold(answer: str, options: dict) -> str | None:
    g = answer.strip() if isinstance(answer, str) else ""
    return g if g in options else extract_choice(g, options)   # tolerate "(B)" or "No." as the gold


# ---------------------------------------------------------------- per-completion rewards
def _roam(well_formed: bool, t: str | None, a: str | None, g: str | None) -> float:
    if not well_formed:
        return 0.0
    if t is None:
        if a is None:
            return ROAM_INCONSISTENT
        return ROAM_CORRECT_ANSWER_ONLY if a == g else ROAM_ANSWER_ONLY_WRONG
    if a != t:
        return ROAM_INCONSISTENT
    return ROAM_CORRECT_WITH_REASONING if a == g else ROAM_CONSISTENT_WRONG


def judge(completion: str, answer: str, options: dict) -> dict:
    """One completion read once: `think`/`answer` (the option letters the reasoning and the answer block
    conclude, or None), `gold`, the rewards `roam`, `accuracy`, `format`, and `consistency`: 1.0 when the
    completion is well formed and its reasoning concludes the very option it answers (what ROAM trains, §3.3)."""
    p = parse(completion)
    g = _gold(answer, options)
    t, a = extract_choice(p.think, options), extract_choice(p.answer, options)
    return {"think": t, "answer": a, "gold": g, "roam": _roam(p.well_formed, t, a, g),
            # only the <answer> block is read: falling back to the whole text would pay for naming every option
            "accuracy": 1.0 if a is not None and a == g else 0.0, "format": 1.0 if p.well_formed else 0.0,
            "consistency": 1.0 if p.well_formed and t is not None and t == a else 0.0}


def roam_reward(completion: str, answer: str, options: dict) -> float:
    """ROAM, eq. (7): R = Φ(R_μ, R_γ) + Ψ(O_ν, A_γ, R_μ), with the tiers of §4.5 (the table below).

    Without reference reasoning R_γ, "reasoning aligned with the solution" means the reasoning concludes
    the gold option. Φ = 0.2 (= 1.0 − 0.8) when it does, else 0; Ψ = 0.8 for a correct answer, 0.1 for a
    wrong answer the reasoning also concluded, 0.05 for a wrong answer with no conclusive reasoning, and
    disagreement between reasoning and answer zeroes the sum (Ψ = −Φ). Row by row:
        t (think)   a (answer)       reward
        none        none             0
        none        = g              0.8    correct answer alone
        none        ≠ g              0.05   answer present, wrong
        = g         = g              1.0    reasoning derives the correct answer
        ≠ g         = t              0.1    consistent but wrong
        any         ≠ t              0      reasoning and answer disagree (t = g, a = none included)
    """
    return judge(completion, answer, options)["roam"]


def accuracy_reward(completion: str, answer: str, options: dict) -> float:
    return judge(completion, answer, options)["accuracy"]


def format_reward(completion: str, answer: str = "", options: dict | None = None) -> float:
    return 1.0 if parse(completion).well_formed else 0.0


# ---------------------------------------------------------------- IoU for {"bbox_2d": [x1, y1, x2, y2]}
_OBJECT = re.compile(r"\{[^{}]*\}")   # flat {...} spans; [^{}] keeps the scan linear


def _box(obj) -> list[float] | None:
    if isinstance(obj, list):
        obj = obj[0] if obj else None
    b = obj.get("bbox_2d") if isinstance(obj, dict) else None
    if not (isinstance(b, list) and len(b) == 4 and all(type(v) in (int, float) for v in b)):  # bool is not a number
        return None
    try:
        x1, y1, x2, y2 = map(float, b)
    except OverflowError:   # an int with hundreds of digits
        return None
    ok = all(map(math.isfinite, (x1, y1, x2, y2))) and x1 < x2 and y1 < y2
    return [x1, y1, x2, y2] if ok else None


def parse_bbox(text: str | None) -> list[float] | None:
    """The first valid {"bbox_2d": [x1, y1, x2, y2]} in `text` (json.loads only, never eval), or None."""
    if not isinstance(text, str):
        return None
    text = re.sub(r"```(?:json)?", "", text).strip()
    try:
        box = _box(json.loads(text))
        if box is not None:
            return box
    except (ValueError, RecursionError):
        pass
    for m in _OBJECT.finditer(text):
        try:
            box = _box(json.loads(m.group()))
        except (ValueError, RecursionError):
            continue
        if box is not None:
            return box
    return None


BOX_LIST = re.compile(r'"bbox_2d"\s*:\s*\[([^\[\]]{0,200})\]')


def why_no_box(reply):
    """Why anomalyr1.parse_box found nothing, told to the user: no box, or one with no area (small models write
    x1 = x2)."""
    m = BOX_LIST.search(reply)
    if m is None:
        return "the reply holds no bounding box"
    try:
        x1, y1, x2, y2 = (float(v) for v in m.group(1).split(","))
    except ValueError:
        return f"the reply's box [{m.group(1)}] is not four numbers [x1, y1, x2, y2]"
    if x1 == x2 or y1 == y2:
        return f"the reply's box [{m.group(1)}] has zero area (x1 = x2 or y1 = y2)"
    return f"the reply's box [{m.group(1)}] is not [x1, y1, x2, y2] with x1 < x2 and y1 < y2"


def iou(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def iou_reward(completion: str, answer: str, options: dict | None = None) -> float:
    # Continuous IoU as in VLM-R1; 0 where the <answer> holds no valid box (the format check), and 0 where
    # the gold is not a box, so the reward can be summed over a mix of grounding and choice questions.
    pred, gold = parse_bbox(parse(completion).answer), parse_bbox(answer)
    return iou(pred, gold) if pred and gold else 0.0


REWARDS = {"accuracy": accuracy_reward, "format": format_reward, "roam": roam_reward, "iou": iou_reward}


# ---------------------------------------------------------------- LR-IAD rare-defect reward (group level)
def class_weight(label: str, class_counts: collections.Counter | None) -> float:
    """Inverse frequency of `label` among the labels counted so far ("good" or a defect kind), normalised
    so the mean weight over the classes present is 1. A class not counted yet is the rarest there is, so
    it gets the largest weight present; no counts at all means uniform weights (1.0)."""
    inv = {c: 1.0 / n for c, n in (class_counts or {}).items() if n > 0}
    if not inv:
        return 1.0
    mean = sum(inv.values()) / len(inv)
    return inv.get(label, max(inv.values())) / mean


def rare_defect_reward(completions, answer, options, label="good", class_counts=None,
                       alpha=RARE_ALPHA, gamma=RARE_GAMMA) -> list[float]:
    """LR-IAD (arXiv 2504.19524): "a reward function that dynamically prioritizes rare defect patterns".
    No public code exists; this is our reading, focal-loss shaped: a correct completion earns
        α · (1 − p)^γ · w_c
    with p the fraction of this group's completions that are correct (how easy the prompt is for the
    current policy) and w_c = class_weight(label). Wrong completions earn 0.
    Defaults: γ = 2 is focal loss's choice (Lin et al., 2017): a prompt solved 7/8 of the time keeps
    1/64 of the bonus, one solved 1/8 of the time keeps 49/64. α = 1 because w_c already does the
    class balancing focal loss's α was for, and it keeps the term on accuracy's 0..1 scale.
    Note: within a group this is a constant times accuracy, and GRPO's (r − mean)/std removes constants,
    so alone it trains like accuracy; its effect is in a sum, where it sets how much correctness weighs
    against ROAM/format on rare classes and hard prompts."""
    return _rare([accuracy_reward(c, answer, options) for c in completions], label, class_counts, alpha, gamma)


def _rare(correct, label, class_counts, alpha=RARE_ALPHA, gamma=RARE_GAMMA) -> list[float]:
    if not correct:
        return []
    p = sum(correct) / len(correct)
    bonus = alpha * (1.0 - p) ** gamma * class_weight(label, class_counts)
    return [bonus * c for c in correct]


_JUDGED = {"accuracy": accuracy_reward, "format": format_reward, "roam": roam_reward}   # read off judge()


def reward_names(names) -> list[str]:
    """The rewards a comma string ("accuracy,roam") or a list names; a ValueError names what is wrong with it: none
    named, an unknown name, a name twice (its reward would count double)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
        if "" in names and names != [""]:  # "accuracy,,roam" or a trailing comma ("" alone: none named, below)
            raise ValueError("an empty name between commas; write the names with one comma between, e.g. "
                             "accuracy,roam")
        names = [n for n in names if n]
    valid = sorted(REWARDS) + ["rare"]
    unknown = [n for n in names if n not in valid]
    choose = f"choose from {', '.join(valid)}, e.g. accuracy,roam"
    if unknown:
        raise ValueError(f"unknown reward {', '.join(map(repr, unknown))}; {choose}")
    if not names:
        raise ValueError(f"no reward named; {choose}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{', '.join(map(repr, twice))} named twice (it would count double); name each reward once")
    return list(names)


def judge_group(names, completions, answer, options, label="good", class_counts=None) -> tuple[dict, dict]:
    """Score one group of G completions of the same prompt, parsing each completion once (judge):
    ({name: [G floats]} per requested reward, {"accuracy": [G], "consistency": [G]}). `names` is a list or a
    comma string ("accuracy,roam"); training sums the first dict, the second is logged whatever is trained."""
    names = reward_names(names)
    judged = [judge(c, answer, options) for c in completions]
    out = {}
    for n in names:
        if n == "rare":
            out[n] = _rare([j["accuracy"] for j in judged], label, class_counts)
        elif REWARDS[n] is _JUDGED.get(n):   # a reward a user swapped into REWARDS is called as is
            out[n] = [j[n] for j in judged]
        else:
            out[n] = [float(REWARDS[n](c, answer, options)) for c in completions]
    return out, {k: [j[k] for j in judged] for k in ("accuracy", "consistency")}


def score_group(names, completions, answer, options, label="good", class_counts=None) -> dict[str, list[float]]:
    """{name: [G floats]} per requested reward for one group (judge_group's first half)."""
    return judge_group(names, completions, answer, options, label, class_counts)[0]


@dataclasses.dataclass
class Config:
    completion: str = cli.option(cli.REQUIRED, "the completion text ('' too: what an empty reply earns)",
                                 positional=True, empty_ok=True)
    answer: str = cli.option(cli.REQUIRED, 'gold letter, or \'{"bbox_2d": [x1, y1, x2, y2]}\'')
    options: str = cli.option("", 'e.g. "A=Yes.,B=No."; none for a box answer', empty_ok=True)


def main(argv=None) -> int:
    p = cli.parser("Print every per-completion reward for one completion.", prog="roam.py")
    cli.add_flags(p, Config)
    cfg = Config(**cli.given(p, argv))
    with cli.user_errors("roam.py"):
        options = cli.parse_options(cfg.options)
        if parse_bbox(cfg.answer) is None and _gold(cfg.answer, options) is None:  # every reward would read 0
            raise ValueError(f"--answer {cfg.answer!r} is neither one of --options {sorted(options) or '(none given)'} "
                             "nor a box '{\"bbox_2d\": [x1, y1, x2, y2]}' with x1 < x2, y1 < y2; "
                             "e.g. --answer A --options 'A=Yes.,B=No.'")
    j = judge(cfg.completion, cfg.answer, options)
    print(f"think choice:  {j['think']}\nanswer choice: {j['answer']}\nwell formed:   {bool(j['format'])}"
          f"\nconsistent:    {bool(j['consistency'])}")
    for name, fn in REWARDS.items():
        print(f"{name:9s} {fn(cfg.completion, cfg.answer, options):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
