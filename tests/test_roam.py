"""The executable spec of roam.py: ROAM rows (eq. (7), §4.5), option extraction, reward hacking, IoU, LR-IAD."""
import ast
import collections
import os
import pathlib
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
import roam  # noqa: E402
from roam import (REWARDS, accuracy_reward, class_weight, extract_choice, format_reward, iou_reward, parse,
                  rare_defect_reward, roam_reward, score_group)

YN = {"A": "Yes.", "B": "No."}
KIND = {"A": "Scratch.", "B": "Hole.", "C": "Stain.", "D": "Crack."}
WHERE = {"A": "Top left.", "B": "Top right.", "C": "Bottom left.", "D": "Center."}


def c(think, answer):
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


# ---------------------------------------------------------------- ROAM, row by row (roam_reward's table, §4.5)
ROAM_ROWS = [
    # name, completion, gold, options, (t, a) the completion must yield, expected reward
    ("t none, a none", c("I look at the surface closely.", "unsure"), "B", KIND, (None, None), 0.0),
    ("t none, a = g", c("I look at the surface closely.", "B"), "B", KIND, (None, "B"), 0.8),
    ("t none, a = g (option text)", c("I look at the surface closely.", "Hole."), "B", KIND, (None, "B"), 0.8),
    ("t none, a != g", c("I look at the surface closely.", "A"), "B", KIND, (None, "A"), 0.05),
    ("t = g, a = g", c("There is a round hole, so the answer is B.", "B"), "B", KIND, ("B", "B"), 1.0),
    ("t = g, a = g (yes/no by text)", c("there is no defect, so the answer is no", "No."), "B", YN, ("B", "B"), 1.0),
    ("t != g, a = t", c("There is a long scratch, option A.", "A"), "B", KIND, ("A", "A"), 0.1),
    ("t = g, a != t", c("There is a round hole, so the answer is B.", "C"), "B", KIND, ("B", "C"), 0.0),
    ("t != g, a = g (disagree)", c("There is a long scratch, option A.", "B"), "B", KIND, ("A", "B"), 0.0),
    ("t != g, a != t, a != g", c("There is a long scratch, option A.", "D"), "B", KIND, ("A", "D"), 0.0),
    ("t = g, a none", c("There is a round hole, so the answer is B.", "unsure"), "B", KIND, ("B", None), 0.0),
    ("t != g, a none", c("There is a long scratch, option A.", "unsure"), "B", KIND, ("A", None), 0.0),
    ("not well formed", "<think>a round hole, B</think> so <answer>B</answer>", "B", KIND, ("B", "B"), 0.0),
]


@pytest.mark.parametrize("name,completion,gold,options,ta,expected", ROAM_ROWS, ids=[r[0] for r in ROAM_ROWS])
def test_roam_rows(name, completion, gold, options, ta, expected):
    p = parse(completion)
    assert (extract_choice(p.think, options), extract_choice(p.answer, options)) == ta   # the row is the row it names
    assert roam_reward(completion, gold, options) == expected


def test_roam_constants_are_the_paper_tiers():   # §4.5
    assert (roam.ROAM_CORRECT_WITH_REASONING, roam.ROAM_CORRECT_ANSWER_ONLY, roam.ROAM_CONSISTENT_WRONG,
            roam.ROAM_ANSWER_ONLY_WRONG, roam.ROAM_INCONSISTENT) == (1.0, 0.8, 0.1, 0.05, 0.0)


def test_roam_gold_may_be_written_as_option():
    assert roam_reward(c("a round hole, so B", "B"), "(B)", KIND) == 1.0
    assert roam_reward(c("a round hole, so B", "B"), "Hole.", KIND) == 1.0


# ---------------------------------------------------------------- extract_choice
CHOICES = [
    # letters
    ("B", KIND, "B"), ("(B)", KIND, "B"), ("B.", KIND, "B"), ("B:", KIND, "B"), ("B)", KIND, "B"),
    ("[C]", KIND, "C"), ("**D**", KIND, "D"), ("'B'", KIND, "B"), ("  C \n", KIND, "C"),
    ("option B", KIND, "B"), ("Option C is correct", KIND, "C"), ("the answer is B", KIND, "B"),
    ("The correct answer is (D).", KIND, "D"), ("answer: C", KIND, "C"), ("B. Hole.", KIND, "B"),
    ("I would pick C here", KIND, "C"),
    # a standalone "A" is the option
    ("A", KIND, "A"), ("(A)", KIND, "A"), ("A.", KIND, "A"), ("A:", KIND, "A"), ("option A", KIND, "A"),
    ("answer is A", KIND, "A"), ("answer: A", KIND, "A"), ("I choose A because it fits", YN, "A"),
    ("Answer: A because the edge is torn", YN, "A"), ("**Answer:** A because", YN, "A"),
    # option texts: case-insensitive, trailing punctuation dropped, whitespace-flexible
    ("Yes.", YN, "A"), ("yes", YN, "A"), ("NO", YN, "B"), ("no!", YN, "B"),
    ("a scratch", KIND, "A"), ("I see a STAIN near the rim", KIND, "C"),
    ("top left", WHERE, "A"), ("the defect is in the Top   Right corner", WHERE, "B"),
    ("bottom\nleft", WHERE, "C"),
    # yes/no questions answered in words
    ("there is no defect, so the answer is no", YN, "B"), ("Yes, there is a crack.", YN, "A"),
    ("So yes.", YN, "A"), ("The answer is no.", YN, "B"), ("answer: (B)", KIND, "B"), ("therefore B", KIND, "B"),
    ("I choose B", KIND, "B"), ("option B is correct", KIND, "B"), ("所以答案是A。", YN, "A"), ("答案：B", YN, "B"),
    # last conclusive mention wins, letters and texts alike
    ("A at first, but on reflection B", KIND, "B"), ("B. No wait, option A", KIND, "A"),
    ("It looks like a hole... actually a scratch", KIND, "A"), ("scratch? no, the answer is B", KIND, "B"),
    ("Yes at first glance; the answer is B", YN, "B"), ("B seemed likely, but yes", YN, "A"),
    ("a deep scratch", {"A": "Deep scratch.", "B": "Scratch."}, "A"),   # same end: the longer match wins
    ("Top left", {"A": "Left.", "B": "Top.", "C": "Center."}, None),   # two options' texts make a third place
    ("It is top-left of the cap.", {"A": "Left.", "B": "Top."}, None), ("Yes no", YN, None),
    ("Top left", {"A": "Left.", "B": "Top left.", "C": "Top."}, "B"),   # inside a longer option: not a mention
    ("The defect is on the left, at the top.", {"A": "Left.", "B": "Top."}, "B"),
    ("Top left", {"A": "Left.", "B": "Center.", "C": "Bottom."}, None),   # a place is not a part of one
    ("the top-right corner", {"A": "Top.", "B": "Left."}, None), ("upper left", {"A": "Left.", "B": "Top."}, None),
    ("It is on the left side.", {"A": "Left.", "B": "Top."}, "A"), ("In the center.", WHERE, "D"),
    # "over X", "rather than X", "instead of X" reject X; "over" with words between is only a place
    ("I choose B over A.", KIND, "B"), ("I choose A over B.", KIND, "A"), ("I pick B over option (A).", KIND, "B"),
    ("I choose B rather than A.", KIND, "B"), ("I choose B instead of A.", KIND, "B"),
    ("a hole over scratch", KIND, "B"), ("There is a stain over the center.", WHERE, "D"),
    ("A crack runs over the cap so D", KIND, "D"),
    # a negation covers a few words, never past a conclusion word after it
    ("There are more than two spots so B.", KIND, "B"), ("It has no scratch so B", KIND, "B"),
    ("not A but B", KIND, "B"), ("There is not a crack, therefore D", KIND, "D"), ("no tear, thus B", KIND, "B"),
    ("not B", KIND, None), ("It is not really B", KIND, None), ("rather than a deep B", KIND, None),
    # full-width forms (NFKC), as a model writing Chinese may give them
    ("答案是Ｂ", YN, "B"), ("答案：Ａ。", YN, "A"), ("（Ｃ）", KIND, "C"), ("The answer is Ｄ.", KIND, "D"),
    ("ｎｏ", YN, "B"),
    # nothing conclusive
    ("", KIND, None), ("I am not sure.", KIND, None), ("unsure", YN, None),
]


@pytest.mark.parametrize("text,options,expected", CHOICES)
def test_extract_choice(text, options, expected):
    assert extract_choice(text, options) == expected


# ---------------------------------------------------------------- realistic completions, as Qwen2.5-VL-Instruct writes
# Each row: reasoning, answer block, gold, options, the ROAM reward a careful reader gives by §4.5 (the
# table in roam_reward's docstring). NY is YN reshuffled, as eval.py and MMAD do: "No." is then option A.
NY = {"A": "No.", "B": "Yes."}
REAL = [
    # --- Yes/No (Anomaly Detection), yes/no used as ordinary words
    ("The cap is cracked, so the answer is A. No other anomalies are visible.", "A", "A", YN, 1.0),  # issue 11
    ("There is no template image, so I rely on the query alone.", "A", "A", YN, 0.8),   # "no template": no conclusion
    ("Yes, I will look at the image carefully. The bottle mouth shows a chip on the rim.", "A", "A", YN, 0.8),
    ("Yes, there is a crack running across the cap, which the template does not have.", "A", "A", YN, 1.0),
    ("No, there is no defect. The surface is uniform and matches the normal sample.", "B", "B", YN, 1.0),
    ("Comparing the query image with the template, I see no visible defects on the screw. The thread is "
     "regular and the head is intact. Therefore, the answer is No.", "B", "B", YN, 1.0),
    ("There is no doubt that the pill has a red speck near the edge, which is not present in the normal "
     "sample. So yes, there is an anomaly.", "A", "A", YN, 1.0),   # "So yes," is a cue; "no doubt" is not a no
    ("The hazelnut looks normal at first glance, but there is a small hole on the shell. No other defects "
     "are visible. The answer is A.", "A", "A", YN, 1.0),   # "No other defects" sits between, never read
    ("The carpet texture is consistent with the template and no anomalies are visible.", "B", "B", YN, 0.8),
    ("The metal nut has no scratches and no bent edges. Everything looks fine.\nNo.", "B", "B", YN, 1.0),  # final "No."
    ("Yes. The transistor's left lead is bent compared with the normal image.", "A", "A", YN, 1.0),  # answer first
    ("The wood grain is regular, so there is no defect. The answer is no.", "A", "B", YN, 0.0),  # says no, answers A
    ("There is a visible scratch on the surface, so the answer is yes.", "A", "B", YN, 0.1),  # consistent, wrong
    ("Looking closely, I do not see any contamination. So no.", "B", "A", YN, 0.1),
    ("I cannot see any defect clearly.", "B", "A", YN, 0.05),
    ("Comparing the two images, the print on the capsule is intact. I would say no.", "B", "B", YN, 1.0),   # hedged reasoning concludes nothing, answer wrong
    # reshuffled options: the letter of "No." is A
    ("The zipper teeth are aligned and no fabric is torn. Therefore, the answer is A.", "A", "A", NY, 1.0),
    ("The cable insulation is cut near the middle, so the answer is yes (B).", "B", "B", NY, 1.0),
    ("The correct option is B: Yes.", "B", "B", NY, 1.0),   # the text restates the letter, one conclusion
    # restated options
    ("The options are A. Yes. B. No. The capsule print is smudged compared with the template, so A.", "A", "A", YN,
     1.0),
    ("The question asks whether there is a defect. Options: A. Yes, B. No. I need to compare both images.",
     "B", "B", YN, 0.8),   # restating the options concludes nothing
    # answers written as option text, markdown
    ("The bottle is fine, so the answer is **No**.", "No.", "B", YN, 1.0),
    ("There is a crack, so the answer is **A**.", "**A**", "A", YN, 1.0),
    ("The surface is clean and no defects are visible.", "No", "B", YN, 0.8),
    # Chinese replies
    ("表面有划痕，所以答案是A。", "A", "A", YN, 1.0),   # issue 11: a letter next to CJK text
    ("与模板相比，瓶口没有缺陷，因此选择B。", "B", "B", YN, 1.0),
    ("图中螺丝头部有明显的划痕。答案：A", "B", "A", YN, 0.0),   # concludes A, answers B
    ("我仔细观察了图像。", "B", "B", YN, 0.8),
    ("表面有划痕，所以答案是Ａ。", "Ａ", "A", YN, 1.0),   # full-width letters, in the reasoning and the answer block
    # --- defect type (Defect Classification), option texts are content words
    ("The query image shows a thin line across the plate, which looks like a scratch rather than a crack. "
     "So the answer is A.", "A", "A", KIND, 1.0),
    ("I see a dark stain near the rim.", "C", "C", KIND, 1.0),   # a bare mention concludes when nothing else does
    ("It is not a hole, it is a scratch.", "A", "A", KIND, 1.0),   # "not a hole" is negated
    ("The answer is B. Options A, C and D are each unlikely here.", "B", "B", KIND, 1.0),   # issue 11
    ("B fits best, while A, C and D are unlikely.", "B", "B", KIND, 1.0),   # letters before "unlikely" are dropped
    ("The answer is D. A stain can look similar, but this edge is split.", "D", "D", KIND, 1.0),  # a later bare mention
    ("Therefore, given the round opening, B. A scratch would look thinner.", "B", "B", KIND, 1.0),   # cue earlier
    ("Option C is correct. The rim also has a mark that could be mistaken for a scratch.", "C", "C", KIND, 1.0),
    ("Options A and C are unlikely because the edge is intact. D is also unlikely. So B.", "B", "B", KIND, 1.0),
    ("There is a round opening in the surface, which indicates a hole.", "Hole.", "B", KIND, 1.0),
    ("At first it looks like a stain, but on closer inspection it is a crack.", "D", "D", KIND, 1.0),
    ("It could be a scratch. However, the depth suggests a crack. Therefore, D.", "A", "D", KIND, 0.0),
    ("The defect is a crack, so the answer is D.", "D", "B", KIND, 0.1),
    ("Option C is correct because the discoloration matches a stain.", "C", "C", KIND, 1.0),
    ("I choose option (B) since the material is missing in a circle.", "B", "B", KIND, 1.0),
    ("The defect is not a stain.", "C", "B", KIND, 0.05),   # negated only: nothing concluded; answer wrong
    ("Scratch is ruled out and so is stain; the best option is D.", "D", "D", KIND, 1.0),
    # --- localisation
    ("The scratch is in the top left corner of the image, so the answer is A.", "A", "A", WHERE, 1.0),
    ("The defect is not in the center; it sits at the top right.", "B", "B", WHERE, 1.0),
    ("The anomaly appears at the bottom left.", "D", "C", WHERE, 0.0),   # says C, answers D
    ("I think the answer is C.", "C", "A", WHERE, 0.1),
    # --- not well formed stays 0 whatever the reasoning says
    ("The cap is cracked, so A.", "A</answer><answer>A", "A", YN, 0.0),
]


@pytest.mark.parametrize("think,answer,gold,options,expected", REAL, ids=[f"real{i}" for i in range(len(REAL))])
def test_realistic_completions(think, answer, gold, options, expected):
    assert roam_reward(c(think, answer), gold, options) == expected


@pytest.mark.parametrize("text", [
    "A small hole is visible.", "A crack runs along the edge.", "There is a dent. A bit of rust too.",
    "Looking closely:\nA tiny spot.", "a", "a dent", "Observation: A dent.",
])
def test_article_a_is_not_option_a(text):
    assert extract_choice(text, YN) is None


@pytest.mark.parametrize("text", ["I see a crack near the rim. A is correct.", "A is correct.", "A seems right.",
                                  "Comparing both: A fits best.", "A would be my answer."])
def test_option_a_followed_by_a_verb_is_the_option(text):
    """Read as the article "a" until a verb followed it, so a correct A earned less than a correct B (0.8, not 1.0)."""
    assert extract_choice(text, YN) == "A" and extract_choice(text.replace("A ", "B ", 1), YN) == "B"


@pytest.mark.parametrize("text,options", [
    ("C", YN), ("the answer is C", YN), ("(E)", KIND), ("option F", KIND), ("E", KIND),
    ("PCB board", KIND), ("3D scan", KIND), ("options A-D", KIND), ("E.g. a dent", KIND), ("B's edge", KIND),
])
def test_letters_that_are_not_options_or_not_standalone(text, options):
    assert extract_choice(text, options) is None


@pytest.mark.parametrize("text", ["eyes", "I know", "nothing", "Yesterday", "nonzero", "a noisy image"])
def test_option_text_only_on_word_boundaries(text):
    assert extract_choice(text, YN) is None


@pytest.mark.parametrize("text", [
    # "no"/"yes" as ordinary words inside a sentence conclude nothing (the determiner "no" included)
    "No other anomalies are visible.", "There is no template image, so I rely on the query alone.",
    "No defect is visible.", "There is no doubt the cap is intact.", "Yes, I will look at the image carefully.",
    "so no other defect is present", "No visible defects, but let me check the thread. It looks fine too.",
])
def test_ordinary_words_inside_a_sentence_conclude_nothing(text):
    assert extract_choice(text, YN) is None


@pytest.mark.parametrize("text,expected", [
    ("The answer is B. Options A, C and D are each unlikely here.", "B"),   # explicit beats later bare mentions
    ("Options A, C and D are unlikely; B fits.", "B"),                      # negated letters are dropped
    ("It is not a scratch, it is a hole.", "B"), ("There is a hole, not a scratch.", "B"),
    ("B is not correct, so A.", "A"), ("The options are A. Scratch, B. Hole, C. Stain, D. Crack.", None),
    ("The correct option is B: Hole.", "B"), ("**Answer: D**", "D"), ("选项D", "D"), ("D。", "D"),
])
def test_explicit_negated_and_restated(text, expected):
    assert extract_choice(text, KIND) == expected


@pytest.mark.parametrize("text", [None, 123, "<answer>", "\x00\xff", "(" * 1000])
def test_extract_choice_odd_inputs(text):
    assert extract_choice(text, KIND) is None
    assert extract_choice("B", {}) is None and extract_choice("B", None) is None


# ---------------------------------------------------------------- parse / format / accuracy
@pytest.mark.parametrize("text,think,answer,ok", [
    ("<think> x </think><answer> B </answer>", "x", "B", True),
    ("  \n<think>x</think>\n\n<answer>B</answer>\n ", "x", "B", True),
    ("<think></think><answer>B</answer>", "", "B", True),            # empty reasoning: the "answer alone" tier
    ("<think>x</think><answer>  </answer>", "x", "", False),         # empty answer
    ("<think>x</think>junk<answer>B</answer>", "x", "B", False),     # text between blocks
    ("<think>x</think><answer>B</answer> extra", "x", "B", False),   # text after </answer>
    ("pre <think>x</think><answer>B</answer>", "x", "B", False),     # text before <think>
    ("<think>x</think><think>y</think><answer>B</answer>", "y", "B", False),
    ("<think>x</think><answer>A</answer><answer>B</answer>", "x", "B", False),
    ("<answer>B</answer><think>x</think>", "x", "B", False),         # wrong order
    ("<think> <answer> </think> x </answer>", "<answer>", "</think> x", False),   # interleaved
    ("<think><think>x</think></think><answer>B</answer>", "x</think>", "B", False),   # nested: last <think> to last </think>
    ("<think>x</think><answer>B", "x", None, False),                 # truncated
    ("just B", None, None, False),
])
def test_parse(text, think, answer, ok):
    p = parse(text)
    assert (p.think, p.answer, p.well_formed) == (think, answer, ok)
    assert format_reward(text) == (1.0 if ok else 0.0)


@pytest.mark.parametrize("completion,gold,expected", [
    (c("hole", "B"), "B", 1.0), (c("hole", "Hole."), "B", 1.0), (c("hole", "A"), "B", 0.0),
    (c("hole", "B"), "A", 0.0), (c("hole", ""), "B", 0.0),
    ("the answer is B", "B", 0.0),                          # no answer block: the whole text is not read
    ("<think>x</think><answer>B</answer> then more", "B", 1.0),   # format is format_reward's job
    (c("x", "E"), "E", 0.0),                                # E is not among the options
])
def test_accuracy(completion, gold, expected):
    assert accuracy_reward(completion, gold, KIND) == expected


def test_accuracy_never_matches_none_to_none():
    # a grounding gold with no options must not count "no choice" == "no choice" as correct
    assert accuracy_reward(c("x", "nothing"), '{"bbox_2d": [0, 0, 1, 1]}', {}) == 0.0


# ---------------------------------------------------------------- reward hacking
HACKS = [
    ("empty answer", c("a round hole, so B", "")),
    ("two think blocks", "<think>A</think><think>a round hole, so B</think><answer>B</answer>"),
    ("two answer blocks", "<think>a round hole, so B</think><answer>A</answer><answer>B</answer>"),
    ("text after </answer>", c("a round hole, so B", "B") + " B B B"),
    ("answer outside tags", "<think>a round hole, so B</think> B"),
    ("tags in the answer", c("a round hole, so B", "<think>B</think>B")),
]


@pytest.mark.parametrize("name,completion", HACKS, ids=[h[0] for h in HACKS])
def test_hacks_get_no_roam_and_no_format(name, completion):
    assert roam_reward(completion, "B", KIND) == 0.0
    assert format_reward(completion) == 0.0


def test_answer_letter_outside_options():
    # E with options A-D is "no answer": disagreeing with the reasoning, so ROAM 0 and accuracy 0
    assert roam_reward(c("a round hole, so B", "E"), "B", KIND) == 0.0
    assert roam_reward(c("I look closely.", "E"), "B", KIND) == 0.0
    assert accuracy_reward(c("a round hole, so B", "E"), "B", KIND) == 0.0


@pytest.mark.parametrize("gold", ["A", "B", "C", "D"])
def test_naming_every_option_pays_only_for_the_last(gold):
    spray = c("A B C D", "A B C D")
    assert roam_reward(spray, gold, KIND) == (1.0 if gold == "D" else 0.1)
    assert accuracy_reward(spray, gold, KIND) == (1.0 if gold == "D" else 0.0)


def test_very_long_outputs():
    long_ok = c("I inspect every region. " * 8000 + "So the answer is B.", "B")   # ~200k chars
    assert roam_reward(long_ok, "B", KIND) == 1.0
    places = c("top left " * 20000 + "So the answer is C.", "C")   # 40k option-text mentions, each near the next
    assert roam_reward(places, "C", WHERE) == 1.0
    junk = "<think>" * 20000 + "A (B) option C " * 5000 + "{" * 20000 + "<answer>" * 10000
    assert roam_reward(junk, "B", KIND) == 0.0
    assert accuracy_reward(junk, "B", KIND) == 0.0
    assert iou_reward(junk + "</answer>", '{"bbox_2d": [0, 0, 1, 1]}') == 0.0


# ---------------------------------------------------------------- IoU (VLM-R1 style, continuous)
GOLD = '{"bbox_2d": [0, 0, 10, 10]}'


@pytest.mark.parametrize("answer,expected", [
    ('{"bbox_2d": [0, 0, 10, 10]}', 1.0),
    ('{"bbox_2d": [5, 5, 15, 15]}', 25 / 175),            # overlap 5x5, union 100 + 100 - 25
    ('{"bbox_2d": [0, 0, 5, 10]}', 0.5),                  # half of the gold, inside it
    ('{"bbox_2d": [2, 2, 4, 4]}', 4 / 100),
    ('{"bbox_2d": [10, 0, 20, 10]}', 0.0),                # touching edges
    ('{"bbox_2d": [20, 20, 30, 30]}', 0.0),
    ('```json\n{"bbox_2d": [5, 5, 15, 15]}\n```', 25 / 175),
    ('[{"bbox_2d": [0, 0, 5, 10], "label": "scratch"}, {"bbox_2d": [0, 0, 10, 10]}]', 0.5),   # first object
    ('The box is {"bbox_2d": [0.0, 0.0, 5.0, 10.0]} I think.', 0.5),
])
def test_iou_hand_computed(answer, expected):
    assert iou_reward(c("the scratch is top left", answer), GOLD) == pytest.approx(expected)


@pytest.mark.parametrize("answer", [
    "", "no box", '{"bbox_2d": [0, 0, 10]}', '{"bbox_2d": [10, 0, 0, 10]}', '{"bbox_2d": [0, 5, 10, 5]}',
    '{"bbox_2d": ["0", "0", "10", "10"]}', '{"bbox_2d": [NaN, 0, 10, 10]}', '{"bbox_2d": [0, 0, Infinity, 10]}',
    '{"bbox_2d": [true, 0, 10, 10]}', '{"box": [0, 0, 10, 10]}', "{'bbox_2d': [0, 0, 10, 10]}",
    '{"bbox_2d": [0, 0, 1' + "0" * 400 + ', 10]}', "[]", "[[[[" * 10000,
])
def test_iou_malformed_box_is_zero(answer):
    assert iou_reward(c("x", answer), GOLD) == 0.0


def test_iou_infinite_boxes_never_give_nan():
    inf_box = '{"bbox_2d": [0, 0, Infinity, 10]}'   # inf - inf would make the IoU nan
    assert iou_reward(c("x", inf_box), inf_box) == 0.0


def test_iou_needs_answer_block_and_box_gold():
    assert iou_reward('{"bbox_2d": [0, 0, 10, 10]}', GOLD) == 0.0             # box outside <answer>
    assert iou_reward(c("x", '{"bbox_2d": [0, 0, 10, 10]}'), "B", KIND) == 0.0  # a choice question


# ---------------------------------------------------------------- LR-IAD rare-defect reward (arXiv 2504.19524)
COUNTS = collections.Counter(good=90, scratch=10)   # inverse freqs 1/90, 1/10; mean 1/18


@pytest.mark.parametrize("label,expected", [("good", 0.2), ("scratch", 1.8), ("unseen", 1.8)])
def test_class_weight(label, expected):
    assert class_weight(label, COUNTS) == pytest.approx(expected)


def test_class_weight_uniform_without_counts():
    assert class_weight("scratch", None) == 1.0 and class_weight("scratch", collections.Counter()) == 1.0
    assert class_weight("a", collections.Counter(a=5, b=5)) == pytest.approx(1.0)


RIGHT, WRONG = c("a round hole, so B", "B"), c("a scratch, so A", "A")


def test_rare_reward_hand_computed():
    # G = 4, one correct: p = 1/4, (1 - p)^2 = 0.5625; weight 1.8 for the rare class
    r = rare_defect_reward([RIGHT, WRONG, WRONG, WRONG], "B", KIND, "scratch", COUNTS)
    assert r == pytest.approx([0.5625 * 1.8, 0.0, 0.0, 0.0])


def test_rare_class_earns_more_than_common_class():
    group = [RIGHT, WRONG, WRONG, WRONG]
    rare = rare_defect_reward(group, "B", KIND, "scratch", COUNTS)[0]
    common = rare_defect_reward(group, "B", KIND, "good", COUNTS)[0]
    assert rare > common > 0


def test_hard_prompt_earns_more_than_easy_prompt():
    hard = rare_defect_reward([RIGHT, WRONG, WRONG, WRONG], "B", KIND, "good", None)   # p = 1/4
    easy = rare_defect_reward([RIGHT, RIGHT, RIGHT, WRONG], "B", KIND, "good", None)   # p = 3/4
    assert hard[0] == pytest.approx(0.5625) and easy[0] == pytest.approx(0.0625)


def test_rare_reward_wrong_answers_and_solved_prompts_get_zero():
    assert rare_defect_reward([WRONG, WRONG], "B", KIND, "scratch", COUNTS) == [0.0, 0.0]
    assert rare_defect_reward([RIGHT, RIGHT], "B", KIND, "scratch", COUNTS) == [0.0, 0.0]   # p = 1
    assert rare_defect_reward([], "B", KIND) == []


# ---------------------------------------------------------------- score_group, REWARDS
def test_score_group():
    group = [RIGHT, WRONG, "garbage", c("I look closely.", "B")]
    out = score_group(["accuracy", "roam", "format", "iou", "rare"], group, "B", KIND, "scratch", COUNTS)
    assert out["accuracy"] == [1.0, 0.0, 0.0, 1.0]
    assert out["roam"] == [1.0, 0.1, 0.0, 0.8]
    assert out["format"] == [1.0, 1.0, 0.0, 1.0]
    assert out["iou"] == [0.0] * 4
    assert out["rare"] == pytest.approx([0.25 * 1.8, 0.0, 0.0, 0.25 * 1.8])   # p = 1/2
    assert list(score_group("accuracy,roam", group, "B", KIND)) == ["accuracy", "roam"]


def test_judge_reads_one_completion_once(monkeypatch):
    j = roam.judge(c("The cap is cracked, so the answer is A. No other anomalies are visible.", "A"), "A", YN)
    assert j == {"think": "A", "answer": "A", "gold": "A", "roam": 1.0, "accuracy": 1.0, "format": 1.0,
                 "consistency": 1.0}
    assert roam.judge(c("so B", "A"), "A", YN)["consistency"] == 0.0
    assert roam.judge(c("so A", "A") + " more", "A", YN)["consistency"] == 0.0   # not well formed
    calls = []
    monkeypatch.setattr(roam, "parse", lambda text, parse=roam.parse: calls.append(text) or parse(text))
    group = [RIGHT, WRONG, "garbage", c("I look closely.", "B"), c("so A", "B")]
    parts, logs = roam.judge_group("accuracy,roam,format,rare", group, "B", KIND, "scratch", COUNTS)
    assert calls == group                                          # one parse per completion, for every part
    assert parts["roam"] == [roam_reward(t, "B", KIND) for t in group] == [1.0, 0.1, 0.0, 0.8, 0.0]
    assert logs == {"accuracy": [1.0, 0.0, 0.0, 1.0, 1.0], "consistency": [1.0, 1.0, 0.0, 0.0, 0.0]}
    assert parts["rare"] == rare_defect_reward(group, "B", KIND, "scratch", COUNTS)


def test_score_group_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="accuracy.*format.*iou.*roam.*rare"):
        score_group(["accuracy", "bleu"], [RIGHT], "B", KIND)


@pytest.mark.parametrize("names, words", [("", "no reward named"), (",", "empty name"), ([], "no reward"),
                                          ("roam,accuracy,roam", "'roam' named twice"),
                                          ("accuracy,,roam", "empty name"), ("accuracy,", "empty name")])
def test_reward_names_refuses_none_and_repeats(names, words):
    with pytest.raises(ValueError, match=words):
        roam.reward_names(names)
    assert roam.reward_names(" accuracy , roam ") == ["accuracy", "roam"]


def test_rewards_registry():
    assert set(REWARDS) == {"accuracy", "format", "roam", "iou"}
    for fn in REWARDS.values():
        assert isinstance(fn(RIGHT, "B", KIND), float)


def test_roam_is_pure_python():
    tree = ast.parse(pathlib.Path(roam.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
    assert not imported & {"torch", "numpy", "transformers"}


def test_cli(capsys):
    assert roam.main([RIGHT, "--answer", "B", "--options", "A=Scratch.,B=Hole.,C=Stain.,D=Crack."]) == 0
    out = capsys.readouterr().out
    assert "roam      1.0000" in out and "accuracy  1.0000" in out
    for argv in ([RIGHT, "--answer", "B", "--options", "nonsense"], [RIGHT],  # unreadable options; no --answer
                 [RIGHT, "--answer", "E", "--options", "A=Scratch.,B=Hole."], [RIGHT, "--answer", "B"],  # gold not an
                 [RIGHT, "--answer", ""], [RIGHT, "--answer", '{"bbox_2d": [5, 0, 1, 9]}']):  # option; not a box
        with pytest.raises(SystemExit) as e:
            roam.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("roam.py: error: ") and err.count("\n") == 1


# ---------------------------------------------------------------- fuzz: never raises, only the five tiers
PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<think", "answer>", "A", "B", "C", "D", "E", "(B)",
          "A.", "a", "option ", "the answer is ", "Yes", "no", "eyes", "Scratch", "hole", "{", "}", "[", "]",
          '{"bbox_2d": [1, 2, 3, 4]}', "\n", " ", "  ", ".", ",", ":", "*", "\\", "é", "\x00", "\u200b", "😀"]


def random_text(rng):
    if rng.random() < 0.5:   # half shaped like a completion, so every tier is reached
        return c(random_text_flat(rng), random_text_flat(rng))
    return random_text_flat(rng)


def random_text_flat(rng):
    parts = rng.choices(PIECES, k=rng.randint(0, 12))
    if rng.random() < 0.3:
        parts.append("".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 20))))
    rng.shuffle(parts)
    return "".join(parts)


def test_roam_fuzz_10000_strings():
    rng = random.Random(0)
    seen = collections.Counter()
    for _ in range(10_000):
        text = random_text(rng)
        gold, options = rng.choice([("B", KIND), ("A", YN), ("B", YN), ("D", KIND)])
        r = roam_reward(text, gold, options)
        assert r in {0.0, 0.05, 0.1, 0.8, 1.0}, (text, r)
        seen[r] += 1
        for fn in REWARDS.values():
            assert 0.0 <= fn(text, gold, options) <= 1.0
    assert set(seen) == {0.0, 0.05, 0.1, 0.8, 1.0}   # the generator reaches every tier
